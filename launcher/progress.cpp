#include "launcher/progress.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

#include "core/common/error.h"

namespace cr {

std::string format_duration(double s) {
  if (s < 60) return fmt::format("{:.1f}s", s);
  const long t = (long)(s + 0.5);
  if (t < 3600) return fmt::format("{}m{:02d}s", t / 60, (int)(t % 60));
  return fmt::format("{}h{:02d}m", t / 3600, (int)((t % 3600) / 60));
}

Progress::Progress(int total)
    : total_(total), tty_(process_identity().rank == 0 && ::isatty(::fileno(stdout))) {}

Progress::~Progress() {
  if (bar_shown_) fmt::print("\n");
}

void Progress::update(int done, double sec_per_step) {
  if (!tty_ || total_ <= 0) return;
  constexpr int kWidth = 30;
  const int filled = (int)((double)done / total_ * kWidth);
  fmt::print("\r\x1b[K[{:=<{}}{: <{}}] {}/{}  ETA {}", "", filled, "", kWidth - filled, done,
             total_, format_duration(sec_per_step * (total_ - done)));
  std::fflush(stdout);
  bar_shown_ = true;
}

void Progress::line(const std::string& text) {
  if (process_identity().rank != 0) return;
  if (bar_shown_) fmt::print("\r\x1b[K");
  bar_shown_ = false;
  fmt::print("{}\n", text);
  std::fflush(stdout);
}

}  // namespace cr
