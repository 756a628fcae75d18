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

namespace {

// Maps a file with the 256 x int32 header read-only into *map (*bytes long); `what` names the
// kind ("token shard", "loss mask") in the one-line errors: cannot open, shorter than the header,
// cannot map.
void map_shard_file(const std::string& path, const char* what, void** map, size_t* bytes) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) CR_INPUT_ERROR("{}: cannot open {}: {}", path, what, std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  const size_t file_bytes = (size_t)st.st_size;
  const size_t header_bytes = kShardHeaderInts * sizeof(int32_t);
  if (file_bytes < header_bytes) {
    ::close(fd);
    CR_INPUT_ERROR("{}: truncated {}: {} bytes, shorter than the {}-byte header", path, what,
                   file_bytes, header_bytes);
  }
  void* m = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) CR_INPUT_ERROR("{}: cannot map {}: {}", path, what, std::strerror(errno));
  *map = m;
  *bytes = file_bytes;
}

}  // namespace

TokenShard::TokenShard(std::string path) : path_(std::move(path)) {
  map_shard_file(path_, "token shard", &map_, &map_bytes_);
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

// ---- loss-mask shards ------------------------------------------------------------------------

namespace cr {

std::string loss_mask_path(const std::string& token_shard_path) {
  const std::string ext = ".bin";
  if (token_shard_path.size() >= ext.size() &&
      token_shard_path.compare(token_shard_path.size() - ext.size(), ext.size(), ext) == 0)
    return token_shard_path.substr(0, token_shard_path.size() - ext.size()) + ".mask";
  return token_shard_path + ".mask";
}

LossMaskShard::LossMaskShard(std::string path, const TokenShard& tokens) : path_(std::move(path)) {
  map_shard_file(path_, "loss mask", &map_, &map_bytes_);
  const size_t file_bytes = map_bytes_;
  const size_t header_bytes = kShardHeaderInts * sizeof(int32_t);
  const int32_t* header = static_cast<const int32_t*>(map_);
  std::string why;
  if (header[0] != kMaskMagic)
    why = fmt::format("bad magic {} in loss mask header, expected {}", header[0], kMaskMagic);
  else if (header[1] != 1)
    why = fmt::format("unsupported loss mask version {}, expected 1", header[1]);
  else if (header[2] < 0 || (size_t)header[2] != tokens.size())
    why = fmt::format("loss mask holds {} entries, its token shard {} holds {} tokens", header[2],
                      tokens.path(), tokens.size());
  else if (file_bytes < header_bytes + (size_t)header[2])
    why = fmt::format("truncated loss mask: header says {} entries, file has {} bytes", header[2],
                      file_bytes);
  if (!why.empty()) {
    ::munmap(map_, map_bytes_);
    map_ = nullptr;
    CR_INPUT_ERROR("{}: {}", path_, why);
  }
  n_ = (size_t)header[2];
  body_ = static_cast<const uint8_t*>(map_) + header_bytes;
}

LossMaskShard::~LossMaskShard() {
  if (map_) ::munmap(map_, map_bytes_);
}

LossMaskShard::LossMaskShard(LossMaskShard&& o) noexcept
    : path_(std::move(o.path_)),
      map_(std::exchange(o.map_, nullptr)),
      map_bytes_(std::exchange(o.map_bytes_, 0)),
      n_(std::exchange(o.n_, 0)),
      body_(std::exchange(o.body_, nullptr)) {}

void LossMaskShard::read(size_t i, size_t n, uint8_t* out) const {
  CR_CHECK(i + n <= n_, "read [{}, {}) past the end of {} ({} entries)", i, i + n, path_, n_);
  for (size_t k = 0; k < n; k++) {
    const uint8_t m = body_[i + k];
    if (m > 1)
      CR_INPUT_ERROR("{}: loss mask entry {} at position {}, expected 0 or 1", path_, m, i + k);
    out[k] = m;
  }
}

// ---- streaming writer ------------------------------------------------------------------------

ShardWriter::ShardWriter(std::string path, Kind kind) : path_(std::move(path)), kind_(kind) {
  f_ = std::fopen(path_.c_str(), "wb");
  if (!f_) CR_INPUT_ERROR("{}: cannot create: {}", path_, std::strerror(errno));
  std::setvbuf(f_, nullptr, _IOFBF, 1 << 20);
  int32_t header[kShardHeaderInts] = {};
  header[0] = kind_ == Kind::Mask ? kMaskMagic : kShardMagic;
  header[1] = kind_ == Kind::Tokens32 ? 2 : 1;
  write(header, sizeof(header));
}

ShardWriter::~ShardWriter() {
  if (f_) std::fclose(f_);
}

void ShardWriter::write(const void* data, size_t bytes) {
  if (bytes && std::fwrite(data, 1, bytes, f_) != bytes)
    CR_INPUT_ERROR("{}: write failed: {}", path_, std::strerror(errno));
}

void ShardWriter::append(const int32_t* tokens, size_t n) {
  CR_CHECK(kind_ != Kind::Mask && f_, "{}: token append to a mask or closed shard", path_);
  CR_CHECK(n_ + n <= (size_t)INT32_MAX, "{}: more than INT32_MAX tokens in one shard", path_);
  if (kind_ == Kind::Tokens16) {
    buf_.resize(n * 2);
    uint16_t* out = reinterpret_cast<uint16_t*>(buf_.data());
    for (size_t i = 0; i < n; i++) {
      CR_CHECK(tokens[i] >= 0 && tokens[i] < 65536, "token {} does not fit a version-1 shard",
               tokens[i]);
      out[i] = (uint16_t)tokens[i];
    }
    write(out, n * 2);
  } else {
    for (size_t i = 0; i < n; i++) CR_CHECK(tokens[i] >= 0, "negative token id {}", tokens[i]);
    write(tokens, n * 4);  // int32 >= 0 has the bits of its uint32 (little-endian hosts)
  }
  n_ += n;
}

void ShardWriter::append(const uint8_t* mask, size_t n) {
  CR_CHECK(kind_ == Kind::Mask && f_, "{}: mask append to a token or closed shard", path_);
  CR_CHECK(n_ + n <= (size_t)INT32_MAX, "{}: more than INT32_MAX entries in one mask", path_);
  for (size_t i = 0; i < n; i++) CR_CHECK(mask[i] <= 1, "loss mask entry {}", mask[i]);
  write(mask, n);
  n_ += n;
}

void ShardWriter::close() {
  CR_CHECK(f_, "{}: closed twice", path_);
  const int32_t count = (int32_t)n_;
  bool ok = std::fflush(f_) == 0 && std::fseek(f_, 2 * sizeof(int32_t), SEEK_SET) == 0 &&
            std::fwrite(&count, sizeof(count), 1, f_) == 1 && std::fflush(f_) == 0 &&
            ::fsync(::fileno(f_)) == 0;
  const int err = errno;
  ok = std::fclose(f_) == 0 && ok;
  f_ = nullptr;
  if (!ok) CR_INPUT_ERROR("{}: write failed: {}", path_, std::strerror(err));
}

}  // namespace cr
