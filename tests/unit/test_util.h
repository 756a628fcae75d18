// Helpers shared by the unit tests: per-test temp dirs and InputError capture.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/common/error.h"
#include "core/common/rng.h"

namespace cr::testing {

// n draws of N(0, scale^2) from a seeded generator: the same inputs on every run.
// n token ids uniform in [0, V).
inline std::vector<int32_t> random_tokens(size_t n, int V, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = (int32_t)rng.below((uint64_t)V);
  return t;
}

inline std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.f) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = (float)rng.normal() * scale;
  return v;
}

// max |a - b| / max |b|, over all elements.
inline double rel_gap(const std::vector<float>& a, const std::vector<float>& b) {
  double gap = 0, ref = 0;
  for (size_t i = 0; i < a.size(); i++) {
    gap = std::max(gap, (double)std::fabs(a[i] - b[i]));
    ref = std::max(ref, (double)std::fabs(b[i]));
  }
  return gap / std::max(ref, 1e-30);
}

// A fresh directory per test (and process), removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::path(::testing::TempDir()) /
            ("cr_" + std::string(info->test_suite_name()) + "_" + info->name() + "_" +
             std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string str() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Runs f, expects an InputError, returns its message (empty + a test failure otherwise).
inline std::string input_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected cr::InputError, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected cr::InputError, nothing was thrown";
  return "";
}

// Runs f, expects a cr::Error (any kind: a failed precondition, not only bad input), returns
// its message (empty + a test failure otherwise).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.message();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected cr::Error, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected cr::Error, nothing was thrown";
  return "";
}

// A measured error for a test's report (RecordProperty, --gtest_output=xml): "1.23e-07".
inline std::string sci(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2e", x);
  return buf;
}

inline bool contains(const std::string& s, const std::string& sub) {
  return s.find(sub) != std::string::npos;
}

}  // namespace cr::testing
