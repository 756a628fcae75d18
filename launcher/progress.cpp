#include "launcher/progress.h"

#include <unistd.h>

#include <algorithm>
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

std::string format_count(double n) {
  if (n < 1e3) return fmt::format("{:.0f}", n);
  if (n < 1e6) return fmt::format("{:.1f}k", n / 1e3);
  if (n < 1e9) return fmt::format("{:.1f}M", n / 1e6);
  return fmt::format("{:.2f}G", n / 1e9);
}

RateProgress::RateProgress(std::string what, uint64_t total_bytes, double line_every_s)
    : what_(std::move(what)),
      total_(total_bytes),
      line_every_(line_every_s),
      tty_(::isatty(::fileno(stderr))),
      start_(std::chrono::steady_clock::now()) {}

RateProgress::~RateProgress() { clear(); }

double RateProgress::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void RateProgress::clear() {
  if (!bar_shown_) return;
  fmt::print(stderr, "\r\x1b[K");
  std::fflush(stderr);
  bar_shown_ = false;
}

std::string RateProgress::text(uint64_t bytes, uint64_t tokens) const {
  const double s = std::max(seconds(), 1e-9);
  std::string pos = fmt::format("{:.1f} MB", bytes / 1e6);
  std::string eta;
  if (total_ > 0) {
    const double f = std::min(1.0, (double)bytes / total_);
    pos = fmt::format("{:3.0f}% {:.1f}/{:.1f} MB", 100 * f, bytes / 1e6, total_ / 1e6);
    if (f > 0.001) eta = "  ETA " + format_duration(s / f - s);
  }
  return fmt::format("{} {}  {} tokens  {:.1f} MB/s  {} tokens/s{}", what_, pos,
                     format_count((double)tokens), bytes / 1e6 / s,
                     format_count(tokens / s), eta);
}

void RateProgress::update(uint64_t bytes, uint64_t tokens) {
  const double now = seconds();
  if (now - last_draw_ < (tty_ ? 0.25 : line_every_)) return;
  last_draw_ = now;
  if (tty_) {
    std::string bar;
    if (total_ > 0) {
      constexpr int kWidth = 24;
      const int filled = (int)(std::min(1.0, (double)bytes / total_) * kWidth);
      bar = fmt::format("[{:=<{}}{: <{}}] ", "", filled, "", kWidth - filled);
    }
    fmt::print(stderr, "\r\x1b[K{}{}", bar, text(bytes, tokens));
    std::fflush(stderr);
    bar_shown_ = true;
  } else if (now >= line_every_) {  // no line in the first interval: short runs stay quiet
    fmt::print("{}\n", text(bytes, tokens));
    std::fflush(stdout);
  }
}

}  // namespace cr
