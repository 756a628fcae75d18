// Terminal progress: full log lines always; a live bar redrawn in place when stdout is a TTY.
#pragma once

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

}  // namespace cr
