// The data side of a training step: a split (train or val) of token shards in a data dir, cut
// into windows of T+1 tokens (inputs = window[0:T], targets = window[1:T+1], stride T), and a
// loader that maps (step, sequence-in-global-batch) to a window.
//
// The mapping is a pure function of (seed, step, index): sequence j of the global batch at step s
// is window perm_e[(s*G + j) mod W], with a fresh seeded permutation per epoch e. A data-parallel
// rank simply asks for its own slice of j; resuming at step s needs no saved cursor.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/data/shard.h"
#include "core/data/tokenizer.h"

namespace cr {

// What `chainrule prepare` records in DIR/dataset.json; shards from elsewhere (llm.c) have none.
struct DatasetInfo {
  std::optional<Tokenizer> tokenizer;
  uint64_t train_tokens = 0, val_tokens = 0;
  uint64_t train_bytes = 0, val_bytes = 0;  // 0 = unknown (no bits-per-byte)
};
std::optional<DatasetInfo> read_dataset_info(const std::string& dir);
void write_dataset_info(const std::string& dir, const DatasetInfo& info);
constexpr const char* kDatasetInfoFile = "dataset.json";

class TokenSplit {
 public:
  // Opens every DIR/*<split>*.bin (sorted by name). Throws InputError if the directory or the
  // shards are missing or malformed.
  TokenSplit(const std::string& dir, const std::string& split);
  size_t tokens() const { return total_; }
  const std::vector<TokenShard>& shards() const { return shards_; }
  void check_vocab(int vocab_size) const;
  const std::string& split() const { return split_; }

 private:
  std::string split_;
  std::vector<TokenShard> shards_;
  size_t total_ = 0;
};

class BatchLoader {
 public:
  // Windows never cross a shard boundary. shuffle=false keeps file order (evaluation).
  BatchLoader(const TokenSplit& split, int T, uint64_t seed, bool shuffle);
  size_t num_windows() const { return n_windows_; }
  int seq_len() const { return T_; }
  // Window w (in the loader's order for pass `epoch`) into inputs[T] and targets[T].
  void window(size_t w, int32_t* inputs, int32_t* targets);
  // Sequences [first, first+count) of the global batch of step `step` (global_batch sequences
  // per step) into inputs/targets [count, T].
  void batch(uint64_t step, int global_batch, int first, int count, int32_t* inputs,
             int32_t* targets);

 private:
  void locate(size_t window_index, size_t* shard, size_t* offset) const;
  const std::vector<uint32_t>& permutation(uint64_t epoch);

  const TokenSplit& split_;
  int T_;
  uint64_t seed_;
  bool shuffle_;
  std::vector<size_t> first_window_;  // per shard: index of its first window (prefix sums)
  size_t n_windows_ = 0;
  uint64_t perm_epoch_ = UINT64_MAX;
  std::vector<uint32_t> perm_;
  std::vector<int32_t> scratch_;
};

}  // namespace cr
