// `chainrule prepare`: text files -> tokenizer + train/val token shards in a data dir.
//
// The split is by blocks of 1024 tokens spread evenly through the corpus (every 1/F-th block goes
// to val), so train and val see the same mix of sources rather than val being one file's tail.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/common/error.h"
#include "core/common/log.h"
#include "core/data/loader.h"
#include "core/data/shard.h"
#include "core/data/tokenizer.h"
#include "launcher/commands.h"

namespace cr {

namespace fs = std::filesystem;

namespace {

constexpr size_t kSplitBlock = 1024;
constexpr size_t kShardTokens = 100'000'000;  // llm.c's shard size

bool looks_binary(const std::string& s) { return s.find('\0') != std::string::npos; }

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) CR_INPUT_ERROR("{}: cannot read input file", p.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Expands directories (regular files only, sorted; symlinks and binary files skipped).
std::vector<fs::path> expand_inputs(const std::vector<std::string>& inputs) {
  std::vector<fs::path> files;
  for (const auto& in : inputs) {
    std::error_code ec;
    if (fs::is_directory(in, ec)) {
      std::vector<fs::path> here;
      for (const auto& e : fs::directory_iterator(in))
        if (e.is_regular_file() && !e.is_symlink()) here.push_back(e.path());
      std::sort(here.begin(), here.end());
      files.insert(files.end(), here.begin(), here.end());
    } else if (fs::is_regular_file(in, ec)) {
      files.emplace_back(in);
    } else {
      CR_INPUT_ERROR("--input {}: no such file or directory", in);
    }
  }
  return files;
}

void write_split(const fs::path& dir, const std::string& split, const std::vector<int32_t>& tokens) {
  for (size_t first = 0, k = 0; first < tokens.size() || k == 0; first += kShardTokens, k++) {
    const size_t last = std::min(tokens.size(), first + kShardTokens);
    std::vector<int32_t> part(tokens.begin() + first, tokens.begin() + last);
    write_token_shard((dir / fmt::format("{}_{:06d}.bin", split, k)).string(), part);
    if (last == tokens.size()) break;
  }
}

}  // namespace

int run_prepare(const PrepareOptions& opt) {
  if (opt.tokenizer != "byte" && opt.tokenizer != "char")
    CR_INPUT_ERROR("--tokenizer {}: expected byte or char", opt.tokenizer);
  if (!(opt.val_fraction > 0 && opt.val_fraction < 1))
    CR_INPUT_ERROR("--val-fraction {}: expected a number in (0, 1)", opt.val_fraction);
  std::error_code ec;
  fs::create_directories(opt.out, ec);
  if (ec || !fs::is_directory(opt.out))
    CR_INPUT_ERROR("--out {}: cannot create the directory: {}", opt.out,
                   ec ? ec.message() : "a file is in the way");
  std::vector<std::string> inputs = opt.inputs;
  if (inputs.empty()) {
    if (!fs::is_directory(kDefaultCorpus))
      CR_INPUT_ERROR("no --input given and the default corpus {} is missing "
                     "(apt-get install fortunes)", kDefaultCorpus);
    inputs.push_back(kDefaultCorpus);
  }

  std::string text;
  int used = 0, skipped = 0;
  for (const auto& f : expand_inputs(inputs)) {
    std::string s = read_file(f);
    if (looks_binary(s)) {  // e.g. the fortunes package's .dat index files
      skipped++;
      continue;
    }
    text += s;
    used++;
  }
  if (text.empty()) CR_INPUT_ERROR("the inputs hold no text");
  log::info("read {} text files ({:.2f} MB); skipped {} binary files", used, text.size() / 1e6,
            skipped);

  const Tokenizer tok = opt.tokenizer == "byte" ? Tokenizer::byte_level() : Tokenizer::char_level_from(text);
  std::vector<uint8_t> nbytes;
  const std::vector<int32_t> all = tok.encode(text, &nbytes);

  DatasetInfo info;
  info.tokenizer = tok;
  std::vector<int32_t> train, val;
  const size_t nblocks = (all.size() + kSplitBlock - 1) / kSplitBlock;
  for (size_t b = 0; b < nblocks; b++) {
    const bool is_val = std::floor((b + 1) * opt.val_fraction) > std::floor(b * opt.val_fraction);
    auto& dst = is_val ? val : train;
    const size_t end = std::min(all.size(), (b + 1) * kSplitBlock);
    uint64_t bytes = 0;
    for (size_t i = b * kSplitBlock; i < end; i++) bytes += nbytes[i];
    dst.insert(dst.end(), all.begin() + b * kSplitBlock, all.begin() + end);
    (is_val ? info.val_bytes : info.train_bytes) += bytes;
  }
  if (val.empty() || train.empty())
    CR_INPUT_ERROR("corpus of {} tokens is too small to split with --val-fraction {}", all.size(),
                   opt.val_fraction);
  info.train_tokens = train.size();
  info.val_tokens = val.size();

  for (const auto& e : fs::directory_iterator(opt.out))  // stale shards would be read too
    if (e.path().extension() == ".bin") fs::remove(e.path());
  write_split(opt.out, "train", train);
  write_split(opt.out, "val", val);
  write_dataset_info(opt.out, info);
  log::info("{} tokenizer, vocabulary {}: {} train tokens, {} val tokens -> {}", tok.name(),
            tok.vocab_size(), train.size(), val.size(), opt.out);
  return 0;
}

}  // namespace cr
