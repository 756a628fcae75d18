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
    return info;
  } catch (const nlohmann::json::exception& e) {
    CR_INPUT_ERROR("{}: malformed dataset description: {}", p.string(), e.what());
  }
}

void write_dataset_info(const std::string& dir, const DatasetInfo& info) {
  nlohmann::json j;
  if (info.tokenizer) j["tokenizer"] = info.tokenizer->to_json();
  j["train"] = {{"tokens", info.train_tokens}, {"bytes", info.train_bytes}};
  j["val"] = {{"tokens", info.val_tokens}, {"bytes", info.val_bytes}};
  const fs::path p = fs::path(dir) / kDatasetInfoFile;
  std::ofstream(p) << j.dump() << "\n";
}

TokenSplit::TokenSplit(const std::string& dir, const std::string& split) : split_(split) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    CR_INPUT_ERROR("data.dir '{}': no such directory (run `chainrule prepare --out {}` first)",
                   dir, dir);
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() && e.path().extension() == ".bin" &&
        name.find(split) != std::string::npos)
      files.push_back(e.path().string());
  }
  if (files.empty())
    CR_INPUT_ERROR("data.dir '{}': no {} shards (expected files named *{}*.bin)", dir, split,
                   split);
  std::sort(files.begin(), files.end());
  for (auto& f : files) {
    shards_.emplace_back(f);
    total_ += shards_.back().size();
  }
}

void TokenSplit::check_vocab(int vocab_size) const {
  for (const auto& s : shards_) s.check_vocab(vocab_size);
}

BatchLoader::BatchLoader(const TokenSplit& split, int T, uint64_t seed, bool shuffle)
    : split_(split), T_(T), seed_(seed), shuffle_(shuffle) {
  for (const auto& s : split.shards()) {
    first_window_.push_back(n_windows_);
    if (s.size() > (size_t)T) n_windows_ += (s.size() - 1) / T;
  }
  if (n_windows_ == 0)
    CR_INPUT_ERROR("{} split of {} tokens is too short for one sequence of {}+1 tokens "
                   "(lower model.block_size or add data)",
                   split.split(), split.tokens(), T);
  scratch_.resize(T + 1);
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

void BatchLoader::window(size_t w, int32_t* inputs, int32_t* targets) {
  size_t shard, offset;
  locate(w, &shard, &offset);
  split_.shards()[shard].read(offset, T_ + 1, scratch_.data());
  std::copy(scratch_.begin(), scratch_.begin() + T_, inputs);
  std::copy(scratch_.begin() + 1, scratch_.end(), targets);
}

void BatchLoader::batch(uint64_t step, int global_batch, int first, int count, int32_t* inputs,
                        int32_t* targets) {
  for (int j = 0; j < count; j++) {
    const uint64_t g = step * (uint64_t)global_batch + (uint64_t)(first + j);
    const uint64_t epoch = g / n_windows_;
    size_t w = g % n_windows_;
    if (shuffle_) w = permutation(epoch)[w];
    window(w, inputs + (size_t)j * T_, targets + (size_t)j * T_);
  }
}

}  // namespace cr
