// evaluate_split's stop hook (a signal during an evaluation is honoured between micro-batches,
// launcher/train_loop.cpp) and its prefix of windows (run.final_eval_tokens, periodic
// evaluations): the hook is asked once before every micro-batch, full and ragged, a "stop"
// abandons the rest, and a hook that never stops changes nothing.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "core/common/rng.h"
#include "core/data/loader.h"
#include "core/data/shard.h"
#include "core/model/gpt.h"
#include "launcher/evaluate.h"
#include "tests/unit/test_util.h"

namespace cr {
namespace {

using testing::TempDir;

std::vector<int32_t> random_tokens(size_t n, int V, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = (int32_t)rng.below((uint64_t)V);
  return t;
}

class EvaluateSplit : public ::testing::Test {
 protected:
  static constexpr int T = 8;
  void SetUp() override {
    cfg_.n_layer = 1;
    cfg_.n_head = 2;
    cfg_.n_embd = 16;
    cfg_.block_size = T;
    cfg_.vocab_size = 29;
    // 61 tokens: 7 full windows of 8 and a tail of 4; 18 tokens: 2 full windows and a tail of 1.
    write_token_shard(dir_.file("d_val_000000.bin"), random_tokens(61, cfg_.vocab_size, 1));
    write_token_shard(dir_.file("d_val_000001.bin"), random_tokens(18, cfg_.vocab_size, 2));
    model_ = std::make_unique<GPT>(cfg_);
    model_->init(5);
  }
  TempDir dir_;
  ModelConfig cfg_;
  std::unique_ptr<GPT> model_;
};

TEST_F(EvaluateSplit, StopIsAskedBeforeEveryMicroBatch) {
  TokenSplit split(dir_.str(), "val");
  const EvalResult plain = evaluate_split(*model_, split, T, /*micro_batch=*/3, 0, 0.0);
  ASSERT_FALSE(plain.stopped);
  ASSERT_EQ(plain.tokens, 60u + 17u);

  // 9 full windows in micro-batches of 3 (3 calls), then 2 ragged tails one at a time (2 calls).
  int asked = 0;
  const EvalResult never = evaluate_split(*model_, split, T, 3, 0, 0.0, [&] {
    asked++;
    return false;
  });
  EXPECT_EQ(asked, 5);
  EXPECT_FALSE(never.stopped);
  EXPECT_EQ(never.tokens, plain.tokens);
  EXPECT_EQ(never.loss, plain.loss) << "a hook that never stops must not change the result";

  // Stop when asked the third time: two micro-batches of 3 windows were scored.
  asked = 0;
  const EvalResult stopped = evaluate_split(*model_, split, T, 3, 0, 0.0, [&] { return ++asked == 3; });
  EXPECT_EQ(asked, 3) << "no micro-batch may run after a stop, and the hook is not asked again";
  EXPECT_TRUE(stopped.stopped);
  EXPECT_EQ(stopped.tokens, 2u * 3u * T);

  // Stop during the ragged tails.
  asked = 0;
  const EvalResult in_tails = evaluate_split(*model_, split, T, 3, 0, 0.0, [&] { return ++asked == 5; });
  EXPECT_TRUE(in_tails.stopped);
  EXPECT_EQ(in_tails.tokens, 9u * T + 4u);

  // Stopped before the first micro-batch: nothing scored, no division by zero surprises.
  const EvalResult at_once = evaluate_split(*model_, split, T, 3, 0, 0.0, [] { return true; });
  EXPECT_TRUE(at_once.stopped);
  EXPECT_EQ(at_once.tokens, 0u);
}

TEST_F(EvaluateSplit, MaxWindowsIsAFixedPrefix) {
  TokenSplit split(dir_.str(), "val");
  // The first 4 full windows, whatever the micro-batch: the same tokens, the same loss up to the
  // order of the float sum over micro-batches.
  const EvalResult a = evaluate_split(*model_, split, T, 4, 4, 0.0);
  const EvalResult b = evaluate_split(*model_, split, T, 1, 4, 0.0);
  EXPECT_EQ(a.tokens, 4u * T);
  EXPECT_EQ(b.tokens, 4u * T);
  EXPECT_NEAR(a.loss, b.loss, 1e-6 * std::fabs(a.loss));
  // More than the split holds: every full window, no tails (periodic evaluation's rule).
  EXPECT_EQ(evaluate_split(*model_, split, T, 4, 1000, 0.0).tokens, 9u * T);
  int asked = 0;
  evaluate_split(*model_, split, T, 4, 4, 0.0, [&] { return ++asked < 0; });
  EXPECT_EQ(asked, 1) << "4 windows in micro-batches of 4: one micro-batch, asked once";
}

}  // namespace
}  // namespace cr
