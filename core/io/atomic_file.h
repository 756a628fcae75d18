// Files that are never seen half-written: the bytes go to a temporary file beside the
// destination (.NAME.tmp.XXXXXX, same directory, so same filesystem), are fsynced, and the
// temporary is renamed over the destination (atomic on POSIX). Until commit() the destination is
// untouched; a temporary not committed is removed. Errors are InputErrors naming the file by
// `label` (default: its path) and the reason: a directory in the way, a missing directory, disk
// full, permission.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace cr {

class AtomicFile {
 public:
  // label: how errors name the file, e.g. "--html out.html".
  explicit AtomicFile(const std::string& path, std::string label = "");
  ~AtomicFile();  // removes the temporary unless committed
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  std::FILE* get() { return f_; }
  void write(std::string_view bytes);
  // Flushes, fsyncs, closes and renames the temporary over the destination. replace = false:
  // never replaces a destination that exists by then (an InputError instead; hard link + unlink).
  void commit(bool replace = true);

 private:
  std::string path_, label_, tmp_;
  std::FILE* f_ = nullptr;
  bool committed_ = false;
};

// Writes the parts, in order, as the whole new content of path.
void write_file_atomically(const std::string& path, const std::vector<std::string_view>& parts,
                           bool replace = true);
inline void write_file_atomically(const std::string& path, std::string_view data) {
  write_file_atomically(path, std::vector<std::string_view>{data});
}

}  // namespace cr
