#include "core/data/split_files.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "core/common/error.h"

namespace cr {

namespace fs = std::filesystem;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A directory name inside a glob pattern must match only itself: escape glob's metacharacters.
std::string glob_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '\\' || ch == '*' || ch == '?' || ch == '[' || ch == ']' || ch == '{' || ch == '}')
      out += '\\';
    out += ch;
  }
  return out;
}

// The regular files (not .mask) that PATTERN matches, relative to DIR unless absolute.
std::vector<std::string> glob_files(const std::string& dir, const char* key,
                                    const std::string& pattern) {
  const std::string full = pattern[0] == '/' ? pattern : glob_escape(dir) + "/" + pattern;
  glob_t g{};
  const int rc = ::glob(full.c_str(), GLOB_BRACE, nullptr, &g);
  std::vector<std::string> files;
  if (rc == 0) {
    for (size_t i = 0; i < g.gl_pathc; i++) {
      const std::string p = g.gl_pathv[i];
      std::error_code ec;
      if (fs::is_regular_file(p, ec) && !ends_with(p, ".mask")) files.push_back(p);
    }
  }
  ::globfree(&g);
  if (rc != 0 && rc != GLOB_NOMATCH)
    CR_INPUT_ERROR("{} '{}': cannot search for it in data.dir '{}' (glob error {})", key, pattern,
                   dir, rc);
  if (files.empty())
    CR_INPUT_ERROR("{} '{}' matches no token shard file in data.dir '{}' (patterns are relative "
                   "to data.dir unless absolute; .mask files and directories do not count)",
                   key, pattern, dir);
  return files;
}

// A path's identity for the both-splits check: the same file reached two ways is one file.
std::string file_key(const std::string& path) {
  std::error_code ec;
  const fs::path c = fs::canonical(path, ec);
  return ec ? fs::path(path).lexically_normal().string() : c.string();
}

std::string rule_of(const char* key, const std::string& pattern) {
  return pattern.empty() ? std::string("by its name") : fmt::format("by {} '{}'", key, pattern);
}

}  // namespace

ShardSplit split_of_shard_name(const std::string& path) {
  const std::string name = fs::path(path).filename().string();
  if (!ends_with(name, ".bin")) return ShardSplit::None;
  const std::string stem = name.substr(0, name.size() - 4);
  bool train = false, val = false;
  for (size_t begin = 0; begin <= stem.size();) {
    const size_t end = std::min(stem.find_first_of("_-.", begin), stem.size());
    const std::string part = stem.substr(begin, end - begin);
    train |= part == "train";
    val |= part == "val";
    begin = end + 1;
  }
  if (train && val)
    CR_INPUT_ERROR("{}: the name has both a 'train' and a 'val' component, so its split is "
                   "ambiguous (rename it, or set data.train_files and data.val_files)",
                   path);
  return train ? ShardSplit::Train : val ? ShardSplit::Val : ShardSplit::None;
}

SplitFiles find_split_files(const std::string& dir, const SplitPatterns& patterns) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    CR_INPUT_ERROR("data.dir '{}': no such directory (run `chainrule prepare --out {}` first)",
                   dir, dir);
  SplitFiles out;
  if (!patterns.train.empty()) out.train = glob_files(dir, "data.train_files", patterns.train);
  if (!patterns.val.empty()) out.val = glob_files(dir, "data.val_files", patterns.val);
  if (patterns.train.empty() || patterns.val.empty()) {
    for (const auto& e : fs::directory_iterator(dir)) {
      if (!e.is_regular_file(ec)) continue;
      const ShardSplit s = split_of_shard_name(e.path().string());
      if (s == ShardSplit::Train && patterns.train.empty()) out.train.push_back(e.path().string());
      if (s == ShardSplit::Val && patterns.val.empty()) out.val.push_back(e.path().string());
    }
  }
  for (auto* files : {&out.train, &out.val}) {
    std::sort(files->begin(), files->end());
    files->erase(std::unique(files->begin(), files->end()), files->end());
  }
  // Training on the files it is evaluated on would make every val figure meaningless.
  std::map<std::string, std::string> train_keys;
  for (const auto& f : out.train) train_keys.emplace(file_key(f), f);
  for (const auto& f : out.val) {
    auto it = train_keys.find(file_key(f));
    if (it != train_keys.end())
      CR_INPUT_ERROR("data.dir '{}': {} is in both splits: train {}, val {} (a file belongs to "
                     "one split)",
                     dir, it->second, rule_of("data.train_files", patterns.train),
                     rule_of("data.val_files", patterns.val));
  }
  return out;
}

std::vector<std::string> split_files(const std::string& dir, const std::string& split,
                                     const SplitPatterns& patterns) {
  CR_CHECK(split == "train" || split == "val", "split '{}'", split);
  SplitFiles all = find_split_files(dir, patterns);
  std::vector<std::string>& files = split == "train" ? all.train : all.val;
  if (files.empty())  // only the name rule can find nothing: a pattern matching nothing threw
    CR_INPUT_ERROR("data.dir '{}': no {} shard (expected files named like *_{}_*.bin, e.g. "
                   "fineweb_{}_000000.bin, or set data.{}_files to a glob)",
                   dir, split, split, split, split);
  return std::move(files);
}

}  // namespace cr
