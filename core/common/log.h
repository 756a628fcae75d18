// Rank-aware logging. Progress (info) prints on rank 0 only; warnings and errors print on every
// rank, prefixed with the rank when the job has more than one.
#pragma once

#include <cstdio>
#include <string>

#include <fmt/format.h>

#include "core/common/error.h"

namespace cr::log {

inline std::string rank_prefix() {
  const auto& id = process_identity();
  return id.world > 1 ? fmt::format("[rank {}] ", id.rank) : std::string();
}

template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (process_identity().rank != 0) return;
  fmt::print(stdout, "{}\n", fmt::format(f, std::forward<Args>(args)...));
  std::fflush(stdout);
}

template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  fmt::print(stderr, "{}warning: {}\n", rank_prefix(), fmt::format(f, std::forward<Args>(args)...));
}

template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  fmt::print(stderr, "{}error: {}\n", rank_prefix(), fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace cr::log
