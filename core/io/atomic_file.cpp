#include "core/io/atomic_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "core/common/error.h"

namespace cr {

namespace fs = std::filesystem;

AtomicFile::AtomicFile(const std::string& path, std::string label)
    : path_(path), label_(label.empty() ? path : std::move(label)) {
  if (fs::is_directory(path)) CR_INPUT_ERROR("{}: is a directory; expected a file name", label_);
  const fs::path p(path);
  const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  if (!fs::is_directory(dir)) CR_INPUT_ERROR("{}: no such directory {}", label_, dir.string());
  std::string tmpl = fmt::format("{}/.{}.tmp.XXXXXX", dir.string(), p.filename().string());
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0)
    CR_INPUT_ERROR("{}: cannot create a file in {}: {}", label_, dir.string(), std::strerror(errno));
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(fd, 0666 & ~mask);  // mkstemp makes 0600; the file is as readable as any new file
  tmp_ = tmpl;
  f_ = ::fdopen(fd, "w");
  if (!f_) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp_.c_str());
    CR_INPUT_ERROR("{}: {}", label_, std::strerror(err));
  }
}

AtomicFile::~AtomicFile() {
  if (f_) std::fclose(f_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::write(std::string_view bytes) {
  if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f_) != bytes.size())
    CR_INPUT_ERROR("{}: write failed: {}", label_, std::strerror(errno));
}

void AtomicFile::commit(bool replace) {
  const bool ok = std::fflush(f_) == 0 && !std::ferror(f_) && ::fsync(::fileno(f_)) == 0;
  const int err = errno;
  std::fclose(f_);
  f_ = nullptr;
  if (!ok) CR_INPUT_ERROR("{}: write failed: {}", label_, std::strerror(err));
  if (!replace) {
    if (::link(tmp_.c_str(), path_.c_str()) != 0) {
      if (errno == EEXIST) CR_INPUT_ERROR("{}: appeared while we worked; not replaced", label_);
      CR_INPUT_ERROR("{}: cannot link {} to it: {}", label_, tmp_, std::strerror(errno));
    }
    ::unlink(tmp_.c_str());
  } else if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    CR_INPUT_ERROR("{}: cannot rename {} to it: {}", label_, tmp_, std::strerror(errno));
  }
  committed_ = true;
}

void write_file_atomically(const std::string& path, const std::vector<std::string_view>& parts,
                           bool replace) {
  AtomicFile f(path);
  for (std::string_view p : parts) f.write(p);
  f.commit(replace);
}

}  // namespace cr
