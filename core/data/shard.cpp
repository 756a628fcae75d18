#include "core/data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "core/common/error.h"

namespace cr {

TokenShard::TokenShard(std::string path) : path_(std::move(path)) {
  int fd = ::open(path_.c_str(), O_RDONLY);
  if (fd < 0) CR_INPUT_ERROR("{}: cannot open token shard: {}", path_, std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  const size_t file_bytes = (size_t)st.st_size;
  const size_t header_bytes = kShardHeaderInts * sizeof(int32_t);
  if (file_bytes < header_bytes) {
    ::close(fd);
    CR_INPUT_ERROR("{}: truncated token shard: {} bytes, shorter than the {}-byte header",
                   path_, file_bytes, header_bytes);
  }
  map_ = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    CR_INPUT_ERROR("{}: cannot map token shard: {}", path_, std::strerror(errno));
  }
  map_bytes_ = file_bytes;
  try {
    validate_header();
  } catch (...) {  // the destructor does not run for a throwing constructor
    ::munmap(map_, map_bytes_);
    map_ = nullptr;
    throw;
  }
}

void TokenShard::validate_header() {
  const size_t file_bytes = map_bytes_;
  const size_t header_bytes = kShardHeaderInts * sizeof(int32_t);
  const int32_t* header = static_cast<const int32_t*>(map_);
  if (header[0] != kShardMagic)
    CR_INPUT_ERROR("{}: bad magic {} in token shard header, expected {} (llm.c .bin format)",
                   path_, header[0], kShardMagic);
  version_ = header[1];
  if (version_ != 1 && version_ != 2)
    CR_INPUT_ERROR("{}: unsupported token shard version {}, expected 1 (uint16) or 2 (uint32)",
                   path_, version_);
  if (header[2] < 0) CR_INPUT_ERROR("{}: negative token count {} in header", path_, header[2]);
  ntok_ = (size_t)header[2];
  const size_t tok_bytes = version_ == 1 ? 2 : 4;
  const size_t expected = header_bytes + ntok_ * tok_bytes;
  if (file_bytes < expected)
    CR_INPUT_ERROR("{}: truncated token shard: header says {} tokens ({} bytes), file has {} bytes",
                   path_, ntok_, expected, file_bytes);
  const char* body = static_cast<const char*>(map_) + header_bytes;
  if (version_ == 1)
    u16_ = reinterpret_cast<const uint16_t*>(body);
  else
    u32_ = reinterpret_cast<const uint32_t*>(body);
}

TokenShard::~TokenShard() {
  if (map_) ::munmap(map_, map_bytes_);
}

TokenShard::TokenShard(TokenShard&& o) noexcept
    : path_(std::move(o.path_)),
      map_(std::exchange(o.map_, nullptr)),
      map_bytes_(std::exchange(o.map_bytes_, 0)),
      version_(o.version_),
      ntok_(std::exchange(o.ntok_, 0)),
      u16_(std::exchange(o.u16_, nullptr)),
      u32_(std::exchange(o.u32_, nullptr)) {}

void TokenShard::read(size_t i, size_t n, int32_t* out) const {
  CR_CHECK(i + n <= ntok_, "read [{}, {}) past the end of {} ({} tokens)", i, i + n, path_, ntok_);
  for (size_t k = 0; k < n; k++) out[k] = token(i + k);
}

void TokenShard::check_vocab(int vocab_size) const {
  for (size_t i = 0; i < ntok_; i++) {
    const int32_t t = token(i);
    if (t < 0 || t >= vocab_size)
      CR_INPUT_ERROR("{}: token id {} at position {} is outside the vocabulary [0, {}) "
                     "(model.vocab_size)",
                     path_, t, i, vocab_size);
  }
}

void write_token_shard(const std::string& path, const std::vector<int32_t>& tokens) {
  CR_CHECK(tokens.size() <= (size_t)INT32_MAX, "{} tokens do not fit one shard", tokens.size());
  int32_t header[kShardHeaderInts] = {};
  header[0] = kShardMagic;
  header[1] = 1;
  header[2] = (int32_t)tokens.size();
  std::vector<uint16_t> body(tokens.size());
  for (size_t i = 0; i < tokens.size(); i++) {
    CR_CHECK(tokens[i] >= 0 && tokens[i] < 65536, "token {} does not fit a version-1 shard",
             tokens[i]);
    body[i] = (uint16_t)tokens[i];
  }
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) CR_INPUT_ERROR("{}: cannot create: {}", tmp, std::strerror(errno));
  bool ok = std::fwrite(header, sizeof(header), 1, f) == 1;
  ok = ok && (body.empty() || std::fwrite(body.data(), 2, body.size(), f) == body.size());
  ok = ok && std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    CR_INPUT_ERROR("{}: write failed: {}", path, std::strerror(errno));
  }
}

}  // namespace cr
