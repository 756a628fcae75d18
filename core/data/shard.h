// Token shard files in llm.c's .bin format, so shards written by llm.c's own data scripts load
// unchanged:
//   header: 256 x int32 little-endian; [0] magic 20240520, [1] version, [2] token count
//   body:   version 1 -> uint16 tokens (GPT-2 sized vocabularies), version 2 -> uint32 tokens
// Shards are memory-mapped read-only; a 100M-token shard costs nothing until it is read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cr {

constexpr int32_t kShardMagic = 20240520;
constexpr int kShardHeaderInts = 256;

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

}  // namespace cr
