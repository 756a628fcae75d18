#include "core/common/error.h"

namespace cr {

ProcessIdentity& process_identity() {
  static ProcessIdentity id;
  return id;
}

Error::Error(std::string msg, const char* file, int line)
    : std::runtime_error(msg), msg_(std::move(msg)), file_(file), line_(line) {}

}  // namespace cr
