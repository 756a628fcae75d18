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

#include "core/data/attention_mask.h"
#include "core/data/shard.h"
#include "core/data/split_files.h"
#include "core/data/tokenizer.h"

namespace cr {

// What `chainrule prepare` records in DIR/dataset.json; shards from elsewhere (llm.c) have none.
struct DatasetInfo {
  std::optional<Tokenizer> tokenizer;
  uint64_t train_tokens = 0, val_tokens = 0;
  uint64_t train_bytes = 0, val_bytes = 0;  // 0 = unknown (no bits-per-byte)
  // With a loss mask (prepare --format pairs): the counted (completion) tokens and their bytes.
  uint64_t train_counted_tokens = 0, val_counted_tokens = 0;
  uint64_t train_counted_bytes = 0, val_counted_bytes = 0;
  // Bytes per scored token of the val split (counted ones with a loss mask); 0 when unknown.
  double val_bytes_per_token(bool loss_mask) const;
};
std::optional<DatasetInfo> read_dataset_info(const std::string& dir);
void write_dataset_info(const std::string& dir, const DatasetInfo& info);
constexpr const char* kDatasetInfoFile = "dataset.json";

class TokenSplit {
 public:
  // Opens the files of split "train" or "val" of DIR that split_files() names (split_files.h:
  // whole name components, or the data.train_files / data.val_files globs), in that order.
  // Throws InputError if the directory or the shards are missing or malformed.
  TokenSplit(const std::string& dir, const std::string& split, const SplitPatterns& patterns = {});
  size_t tokens() const { return total_; }
  const std::vector<TokenShard>& shards() const { return shards_; }
  // Loss masks (NAME.mask beside every NAME.bin, or none: a split with some is an error).
  bool has_loss_mask() const { return !masks_.empty(); }
  const std::vector<LossMaskShard>& masks() const { return masks_; }
  void check_vocab(int vocab_size) const;
  const std::string& split() const { return split_; }

 private:
  std::string split_;
  std::vector<TokenShard> shards_;
  std::vector<LossMaskShard> masks_;
  size_t total_ = 0;
};

// One training or evaluation sequence: tokens [start, start + len] of shard `shard` of a split
// as inputs[len] = tokens[0:len] and targets[len] = tokens[1:len+1]. With the split's loss mask
// a target that is not counted is -1 (GPT: not in the loss). kv_range [len,2] (optional)
// receives the attention key ranges of spec (attention_mask.h; prefix-LM reads the mask).
// scratch holds len + 1 tokens and len + 1 mask bytes between calls.
struct WindowScratch {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask, prefix;
};
void read_window(const TokenSplit& split, size_t shard, size_t start, int len,
                 const AttentionMaskSpec& spec, int32_t* inputs, int32_t* targets,
                 int32_t* kv_range, WindowScratch& scratch);

class BatchLoader {
 public:
  // Windows never cross a shard boundary. shuffle=false keeps file order (evaluation).
  // spec: the attention masks the windows' kv ranges follow (batch() with kv_range).
  BatchLoader(const TokenSplit& split, int T, uint64_t seed, bool shuffle,
              const AttentionMaskSpec& spec = {});
  size_t num_windows() const { return n_windows_; }
  int seq_len() const { return T_; }
  const TokenSplit& split() const { return split_; }
  // Window w (in the loader's order for pass `epoch`) into inputs[T] and targets[T].
  void window(size_t w, int32_t* inputs, int32_t* targets, int32_t* kv_range = nullptr);
  // Sequences [first, first+count) of the global batch of step `step` (global_batch sequences
  // per step) into inputs/targets [count, T] and, when given, kv_range [count, T, 2].
  void batch(uint64_t step, int global_batch, int first, int count, int32_t* inputs,
             int32_t* targets, int32_t* kv_range = nullptr);
  // The counted targets (loss-mask 1) of the whole global batch of `step`: the denominator of
  // its mean loss on every rank, without communication. global_batch * T without a loss mask.
  uint64_t counted_targets(uint64_t step, int global_batch);

 private:
  void locate(size_t window_index, size_t* shard, size_t* offset) const;
  size_t window_index(uint64_t step, int global_batch, int j);
  const std::vector<uint32_t>& permutation(uint64_t epoch);

  const TokenSplit& split_;
  int T_;
  uint64_t seed_;
  bool shuffle_;
  std::vector<size_t> first_window_;  // per shard: index of its first window (prefix sums)
  size_t n_windows_ = 0;
  uint64_t perm_epoch_ = UINT64_MAX;
  std::vector<uint32_t> perm_;
  AttentionMaskSpec spec_;
  WindowScratch scratch_;
};

}  // namespace cr
