// The loader side of prompt->completion data: a split with loss masks (NAME.mask beside every
// NAME.bin) gives -1 targets where the mask does not count the token, the step's counted-target
// total, the prefix-LM key ranges from the same mask, and rejects a split where only some shards
// have a mask.
#include <gtest/gtest.h>

#include <filesystem>
#include <vector>

#include "core/data/loader.h"
#include "core/data/shard.h"
#include "tests/unit/test_util.h"

namespace cr {
namespace {

using testing::TempDir;

void write_shard(const std::string& path, const std::vector<int32_t>& tok,
                 const std::vector<uint8_t>* mask) {
  ShardWriter w(path, ShardWriter::Kind::Tokens16);
  w.append(tok.data(), tok.size());
  w.close();
  if (!mask) return;
  ShardWriter m(loss_mask_path(path), ShardWriter::Kind::Mask);
  m.append(mask->data(), mask->size());
  m.close();
}

// [EOT p p c c] [EOT p c c c] ...: EOT = 9, prompts 1, completions 2.
struct Pairs {
  std::vector<int32_t> tok;
  std::vector<uint8_t> mask;
};
Pairs pairs(int docs) {
  Pairs p;
  for (int d = 0; d < docs; d++) {
    const int prompt = 1 + d % 2;
    p.tok.push_back(9), p.mask.push_back(0);
    for (int i = 0; i < prompt; i++) p.tok.push_back(1), p.mask.push_back(0);
    for (int i = 0; i < 4 - prompt; i++) p.tok.push_back(2), p.mask.push_back(1);
  }
  return p;
}

TEST(LossMask, TargetsCountedTotalsAndPrefixRanges) {
  TempDir dir;
  const Pairs p = pairs(20);  // 100 tokens
  write_shard(dir.str() + "/d_train_000000.bin", p.tok, &p.mask);
  write_shard(dir.str() + "/d_val_000000.bin", p.tok, &p.mask);
  TokenSplit split(dir.str(), "train");
  ASSERT_TRUE(split.has_loss_mask());
  const int T = 10;
  BatchLoader loader(split, T, 1, /*shuffle=*/false, AttentionMaskSpec{true, true, 9});
  std::vector<int32_t> in(2 * T), tgt(2 * T), range(4 * T);
  loader.batch(0, 2, 0, 2, in.data(), tgt.data(), range.data());
  uint64_t counted = 0;
  for (int j = 0; j < 2 * T; j++) {  // window j/T starts at token (j/T)*T; target = token + 1
    const size_t pos = (size_t)(j / T) * T + j % T + 1;
    EXPECT_EQ(tgt[j], p.mask[pos] ? p.tok[pos] : -1) << j;
    EXPECT_EQ(in[j], p.tok[pos - 1]) << j;
    counted += tgt[j] >= 0;
  }
  EXPECT_EQ(loader.counted_targets(0, 2), counted);
  EXPECT_GT(counted, 0u);
  // Window 0 is [EOT p c c c][EOT p p c c]: prompts see their whole prompt, documents split.
  const std::vector<int32_t> lo = {0, 0, 0, 0, 0, 5, 5, 5, 5, 5}, hi = {1, 1, 2, 3, 4, 7, 7, 7, 8, 9};
  for (int t = 0; t < T; t++) {
    EXPECT_EQ(range[2 * t], lo[t]) << t;
    EXPECT_EQ(range[2 * t + 1], hi[t]) << t;
  }
}

TEST(LossMask, SomeShardsWithoutAMaskAreAnError) {
  TempDir dir;
  const Pairs p = pairs(20);
  write_shard(dir.str() + "/d_train_000000.bin", p.tok, &p.mask);
  write_shard(dir.str() + "/d_train_000001.bin", p.tok, nullptr);
  EXPECT_TRUE(testing::contains(testing::input_error_of([&] { TokenSplit(dir.str(), "train"); }),
                                "1 of the 2 train shards have a loss mask"));
}

}  // namespace
}  // namespace cr
