// Which token shard files of a data dir form the train split and which the val split. Every
// reader of a data dir (training, periodic and final evaluation, `chainrule eval`) finds its
// files here, so they all agree.
//
// The name rule follows llm.c's shard names (fineweb_train_000001.bin, fineweb_val_000000.bin)
// and `chainrule prepare`'s (train_000000.bin, PREFIX_train_000000.bin): a file DIR/NAME.bin
// belongs to a split when NAME, cut at '_', '-' and '.', has a component equal to "train" or
// "val". Whole components, not substrings: interval_train_000001.bin is a train shard only, and
// retrieval_val_000000.bin a val shard only. A .bin file with both components is an error, one
// with neither belongs to no split. Files ending in .mask (loss-mask shards) are never token
// shards. Only the top level of DIR is read.
//
// data.train_files / data.val_files replace the rule for their split with a glob(3) pattern
// (brace expansion allowed), relative to DIR or absolute, for layouts the rule does not fit.
#pragma once

#include <string>
#include <vector>

namespace cr {

enum class ShardSplit { None, Train, Val };

// The split FILENAME (a bare name, no directory) belongs to by the name rule. Throws InputError
// naming the file when its components include both "train" and "val".
ShardSplit split_of_shard_name(const std::string& filename);

struct SplitPatterns {
  std::string train;  // data.train_files; empty: the name rule
  std::string val;    // data.val_files; empty: the name rule
};

struct SplitFiles {
  std::vector<std::string> train, val;  // paths, each list sorted by path (byte order)
};

// The token shard files of DIR's two splits. Throws InputError (naming the dir, key, pattern or
// file) when DIR is not a directory, when a pattern matches no file, or when a file falls in
// both splits. Either list may be empty here; split_files() below rejects an empty one.
SplitFiles find_split_files(const std::string& dir, const SplitPatterns& patterns = {});

// The files of one split, split = "train" or "val"; throws InputError when it has none (e.g.
// "data.dir 'D': no val shard").
std::vector<std::string> split_files(const std::string& dir, const std::string& split,
                                     const SplitPatterns& patterns = {});

}  // namespace cr
