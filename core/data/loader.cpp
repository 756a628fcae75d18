#include "core/data/loader.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "core/common/error.h"
#include "core/common/rng.h"

namespace cr {

namespace fs = std::filesystem;

std::optional<DatasetInfo> read_dataset_info(const std::string& dir) {
  const fs::path p = fs::path(dir) / kDatasetInfoFile;
  if (!fs::exists(p)) return std::nullopt;
  std::ifstream in(p);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
    DatasetInfo info;
    if (j.contains("tokenizer")) info.tokenizer = Tokenizer::from_json(j["tokenizer"], p.string());
    info.train_tokens = j.at("train").at("tokens").get<uint64_t>();
    info.train_bytes = j.at("train").value("bytes", (uint64_t)0);
    info.val_tokens = j.at("val").at("tokens").get<uint64_t>();
    info.val_bytes = j.at("val").value("bytes", (uint64_t)0);
    info.train_counted_tokens = j.at("train").value("counted_tokens", (uint64_t)0);
    info.train_counted_bytes = j.at("train").value("counted_bytes", (uint64_t)0);
    info.val_counted_tokens = j.at("val").value("counted_tokens", (uint64_t)0);
    info.val_counted_bytes = j.at("val").value("counted_bytes", (uint64_t)0);
    return info;
  } catch (const nlohmann::json::exception& e) {
    CR_INPUT_ERROR("{}: malformed dataset description: {}", p.string(), e.what());
  }
}

double DatasetInfo::val_bytes_per_token(bool loss_mask) const {
  const uint64_t bytes = loss_mask ? val_counted_bytes : val_bytes;
  const uint64_t tokens = loss_mask ? val_counted_tokens : val_tokens;
  return bytes > 0 && tokens > 0 ? (double)bytes / (double)tokens : 0.0;
}

void write_dataset_info(const std::string& dir, const DatasetInfo& info) {
  nlohmann::json j;
  if (info.tokenizer) j["tokenizer"] = info.tokenizer->to_json();
  j["train"] = {{"tokens", info.train_tokens}, {"bytes", info.train_bytes}};
  j["val"] = {{"tokens", info.val_tokens}, {"bytes", info.val_bytes}};
  const fs::path p = fs::path(dir) / kDatasetInfoFile;
  std::ofstream(p) << j.dump() << "\n";
}

TokenSplit::TokenSplit(const std::string& dir, const std::string& split,
                       const SplitPatterns& patterns)
    : split_(split) {
  for (const auto& f : split_files(dir, split, patterns)) {
    shards_.emplace_back(f);
    total_ += shards_.back().size();
  }
  size_t with_mask = 0;
  for (const auto& s : shards_) with_mask += fs::exists(loss_mask_path(s.path()));
  if (with_mask == 0) return;
  if (with_mask != shards_.size())
    CR_INPUT_ERROR("{}: {} of the {} {} shards have a loss mask (.mask beside the .bin): all or "
                   "none must", dir, with_mask, shards_.size(), split);
  for (const auto& s : shards_) masks_.emplace_back(loss_mask_path(s.path()), s);
}

void read_window(const TokenSplit& split, size_t shard, size_t start, int len,
                 const AttentionMaskSpec& spec, int32_t* inputs, int32_t* targets,
                 int32_t* kv_range, WindowScratch& sc) {
  sc.tokens.resize((size_t)len + 1);
  split.shards()[shard].read(start, (size_t)len + 1, sc.tokens.data());
  std::copy(sc.tokens.begin(), sc.tokens.begin() + len, inputs);
  std::copy(sc.tokens.begin() + 1, sc.tokens.end(), targets);
  const bool masked = split.has_loss_mask();
  if (masked) {
    sc.mask.resize((size_t)len + 1);
    split.masks()[shard].read(start, (size_t)len + 1, sc.mask.data());
    for (int t = 0; t < len; t++)
      if (!sc.mask[t + 1]) targets[t] = -1;  // not counted
  }
  if (!kv_range) return;
  CR_CHECK(!spec.prefix_lm || masked, "prefix-LM needs a loss mask");
  if (spec.prefix_lm) {  // a prompt token: loss mask 0
    sc.prefix.resize(len);
    for (int t = 0; t < len; t++) sc.prefix[t] = sc.mask[t] ? 0 : 1;
  }
  build_kv_range(inputs, spec.prefix_lm ? sc.prefix.data() : nullptr, len, spec, kv_range);
}

void TokenSplit::check_vocab(int vocab_size) const {
  for (const auto& s : shards_) s.check_vocab(vocab_size);
}

BatchLoader::BatchLoader(const TokenSplit& split, int T, uint64_t seed, bool shuffle,
                         const AttentionMaskSpec& spec)
    : split_(split), T_(T), seed_(seed), shuffle_(shuffle), spec_(spec) {
  for (const auto& s : split.shards()) {
    first_window_.push_back(n_windows_);
    if (s.size() > (size_t)T) n_windows_ += (s.size() - 1) / T;
  }
  if (n_windows_ == 0)
    CR_INPUT_ERROR("{} split of {} tokens is too short for one sequence of {}+1 tokens "
                   "(lower model.block_size or add data)",
                   split.split(), split.tokens(), T);
}

void BatchLoader::locate(size_t w, size_t* shard, size_t* offset) const {
  auto it = std::upper_bound(first_window_.begin(), first_window_.end(), w);
  *shard = (size_t)(it - first_window_.begin()) - 1;
  *offset = (w - first_window_[*shard]) * T_;
}

const std::vector<uint32_t>& BatchLoader::permutation(uint64_t epoch) {
  if (epoch != perm_epoch_) {
    perm_.resize(n_windows_);
    for (size_t i = 0; i < n_windows_; i++) perm_[i] = (uint32_t)i;
    Rng rng(seed_ * 0x100000001B3ull + epoch);  // Fisher-Yates with a per-epoch stream
    for (size_t i = n_windows_; i > 1; i--) std::swap(perm_[i - 1], perm_[rng.below(i)]);
    perm_epoch_ = epoch;
  }
  return perm_;
}

void BatchLoader::window(size_t w, int32_t* inputs, int32_t* targets, int32_t* kv_range) {
  size_t shard, offset;
  locate(w, &shard, &offset);
  read_window(split_, shard, offset, T_, spec_, inputs, targets, kv_range, scratch_);
}

size_t BatchLoader::window_index(uint64_t step, int global_batch, int j) {
  const uint64_t g = step * (uint64_t)global_batch + (uint64_t)j;
  const uint64_t epoch = g / n_windows_;
  size_t w = g % n_windows_;
  if (shuffle_) w = permutation(epoch)[w];
  return w;
}

void BatchLoader::batch(uint64_t step, int global_batch, int first, int count, int32_t* inputs,
                        int32_t* targets, int32_t* kv_range) {
  for (int j = 0; j < count; j++)
    window(window_index(step, global_batch, first + j), inputs + (size_t)j * T_,
           targets + (size_t)j * T_, kv_range ? kv_range + 2 * (size_t)j * T_ : nullptr);
}

uint64_t BatchLoader::counted_targets(uint64_t step, int global_batch) {
  if (!split_.has_loss_mask()) return (uint64_t)global_batch * T_;
  uint64_t n = 0;
  scratch_.mask.resize((size_t)T_ + 1);
  for (int j = 0; j < global_batch; j++) {
    size_t shard, offset;
    locate(window_index(step, global_batch, j), &shard, &offset);
    split_.masks()[shard].read(offset, (size_t)T_ + 1, scratch_.mask.data());
    for (int t = 1; t <= T_; t++) n += scratch_.mask[t] != 0;
  }
  return n;
}

}  // namespace cr
