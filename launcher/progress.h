// Terminal progress: full log lines always; a live bar redrawn in place when stdout is a TTY.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace cr {

std::string format_duration(double seconds);  // "1h02m", "3m05s", "12.3s"

class Progress {
 public:
  explicit Progress(int total);
  // Redraws the bar (TTY only) after `done` of `total` steps, given seconds per step.
  void update(int done, double sec_per_step);
  // Prints a full line (clearing the bar first).
  void line(const std::string& text);
  ~Progress();

 private:
  int total_;
  bool tty_;
  bool bar_shown_ = false;
};

// Throughput of a byte stream turned into tokens (`chainrule prepare`): bytes read (and the
// share of the total when it is known), tokens written, MB/s and tokens/s. On a terminal
// (stderr is a TTY) a bar redrawn in place on stderr, at most 4 times a second; otherwise a
// plain line on stdout every `line_every_s` seconds, so logs get a heartbeat and stderr stays
// for errors.
class RateProgress {
 public:
  RateProgress(std::string what, uint64_t total_bytes, double line_every_s = 30);
  ~RateProgress();  // clears the bar
  void update(uint64_t bytes, uint64_t tokens);
  double seconds() const;  // since construction
  void clear();

 private:
  std::string text(uint64_t bytes, uint64_t tokens) const;
  std::string what_;
  uint64_t total_;
  double line_every_;
  bool tty_;
  bool bar_shown_ = false;
  std::chrono::steady_clock::time_point start_;
  double last_draw_ = -1e9;
};

std::string format_count(double n);  // 12345678 -> "12.3M"

}  // namespace cr
