// Token shard files in llm.c's .bin format, so shards written by llm.c's own data scripts load
// unchanged:
//   header: 256 x int32 little-endian; [0] magic 20240520, [1] version, [2] token count
//   body:   version 1 -> uint16 tokens (GPT-2 sized vocabularies), version 2 -> uint32 tokens
// Shards are memory-mapped read-only; a 100M-token shard costs nothing until it is read.
//
// Loss-mask shards (prompt->completion data, `prepare --format pairs`): for token shard NAME.bin
// a file NAME.mask beside it, with the same header but magic 20241129, version 1, [2] = token
// count; body = one uint8 per token, 1 = the token is a prediction target (a completion token),
// 0 = not (the end-of-text token and prompt tokens).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace cr {

constexpr int32_t kShardMagic = 20240520;
constexpr int kShardHeaderInts = 256;
constexpr int32_t kMaskMagic = 20241129;

class TokenShard {
 public:
  // Validates magic, version and size against the header; throws InputError naming the file.
  explicit TokenShard(std::string path);
  ~TokenShard();
  TokenShard(TokenShard&& o) noexcept;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;
  TokenShard& operator=(TokenShard&&) = delete;

  const std::string& path() const { return path_; }
  size_t size() const { return ntok_; }
  int32_t token(size_t i) const {
    return version_ == 1 ? (int32_t)u16_[i] : (int32_t)u32_[i];
  }
  // Copies n tokens starting at i into out.
  void read(size_t i, size_t n, int32_t* out) const;
  // Throws InputError naming the file and position of the first token >= vocab_size.
  void check_vocab(int vocab_size) const;

 private:
  void validate_header();
  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  int version_ = 1;
  size_t ntok_ = 0;
  const uint16_t* u16_ = nullptr;
  const uint32_t* u32_ = nullptr;
};

// Writes tokens as a version-1 shard (all ids must fit uint16), atomically (temp + rename).
void write_token_shard(const std::string& path, const std::vector<int32_t>& tokens);

// The loss mask of one token shard (NAME.mask beside NAME.bin), memory-mapped read-only.
class LossMaskShard {
 public:
  // Validates magic, version, size, and that the count equals `tokens`'s; throws InputError
  // naming the file ("...: loss mask holds 9 entries, its token shard X holds 10 tokens").
  LossMaskShard(std::string path, const TokenShard& tokens);
  ~LossMaskShard();
  LossMaskShard(LossMaskShard&& o) noexcept;
  LossMaskShard(const LossMaskShard&) = delete;
  LossMaskShard& operator=(const LossMaskShard&) = delete;
  LossMaskShard& operator=(LossMaskShard&&) = delete;

  const std::string& path() const { return path_; }
  size_t size() const { return n_; }
  bool counted(size_t i) const { return body_[i] != 0; }
  // Copies n entries (0 or 1) starting at i into out.
  void read(size_t i, size_t n, uint8_t* out) const;

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  size_t n_ = 0;
  const uint8_t* body_ = nullptr;
};

// The mask path of a token shard: "DIR/x_train_000000.bin" -> "DIR/x_train_000000.mask".
std::string loss_mask_path(const std::string& token_shard_path);

// Streams one shard to disk without holding it in memory: the header is written with a zero
// count, the body is appended, and close() fills in the count, flushes and fsyncs. A writer
// destroyed without close() leaves a file whose header says 0 tokens; prepare writes into a
// temporary directory that it removes on failure, so no such file is ever seen.
class ShardWriter {
 public:
  enum class Kind { Tokens16, Tokens32, Mask };  // version 1, version 2, loss mask
  // The token shard kind for a vocabulary: uint16 when every id fits (vocab <= 65536).
  static Kind tokens_for_vocab(int64_t vocab_size) {
    return vocab_size <= 65536 ? Kind::Tokens16 : Kind::Tokens32;
  }
  ShardWriter(std::string path, Kind kind);  // creates (truncates) path; InputError if it cannot
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Token kinds: ids must be in [0, 65536) for Tokens16 (checked: an internal error otherwise).
  void append(const int32_t* tokens, size_t n);
  // Mask kind: entries must be 0 or 1.
  void append(const uint8_t* mask, size_t n);
  size_t size() const { return n_; }
  // Writes the count into the header, flushes and fsyncs; InputError on a write error (disk
  // full) naming the file. A shard holds at most INT32_MAX entries (the header's int32).
  void close();
  const std::string& path() const { return path_; }

 private:
  void write(const void* data, size_t bytes);
  std::string path_;
  Kind kind_;
  std::FILE* f_ = nullptr;
  size_t n_ = 0;
  std::vector<char> buf_;  // conversion buffer (int32 -> uint16/uint32)
};

}  // namespace cr
