// Typed errors and the checking macros every layer uses.
// An Error carries where it was raised (file:line) and, once the launcher knows it, which rank
// and host raised it. Library code throws; only main() catches, reports one line and exits.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace cr {

// Process identity stamped into every error message. Set once by the launcher; defaults
// describe a single-process run.
struct ProcessIdentity {
  int rank = 0;
  int world = 1;
  std::string host;
};
ProcessIdentity& process_identity();

class Error : public std::runtime_error {
 public:
  Error(std::string msg, const char* file, int line);
  const std::string& message() const { return msg_; }
  const char* file() const { return file_; }
  int line() const { return line_; }

 private:
  std::string msg_;
  const char* file_;
  int line_;
};

// User input was wrong (config, data, CLI): the message alone is what the user needs, so the
// one-line report omits our source location.
class InputError : public Error {
 public:
  using Error::Error;
};

}  // namespace cr

#define CR_THROW(...) throw ::cr::Error(::fmt::format(__VA_ARGS__), __FILE__, __LINE__)
#define CR_INPUT_ERROR(...) throw ::cr::InputError(::fmt::format(__VA_ARGS__), __FILE__, __LINE__)

// Preconditions stay on in release builds: a wrong shape is a bug we want named, not UB.
#define CR_CHECK(cond, ...)                                                         \
  do {                                                                              \
    if (!(cond)) [[unlikely]]                                                       \
      throw ::cr::Error(std::string("check failed: " #cond ": ") +                  \
                            ::fmt::format(__VA_ARGS__), __FILE__, __LINE__);        \
  } while (0)
