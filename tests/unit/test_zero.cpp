// Data-parallel building blocks without MPI: gradient buckets cut where backward finishes
// gradients (and the model's hook firing at exactly those points), ZeRO's per-bucket ownership,
// AdamW over ranges (bit-identical to the whole-buffer update, whatever the cut), the sharded
// gradient norm, and flat ranges as checkpoint boxes.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "core/model/gpt.h"
#include "core/optim/adamw.h"
#include "parallel/checkpoint/sharded_tensor.h"
#include "parallel/layers/data_parallel.h"

namespace cr {
namespace {

ModelConfig tiny(ModelFamily family) {
  ModelConfig c;
  c.family = family;
  c.n_layer = 3;
  c.n_head = 2;
  c.n_embd = 16;
  c.block_size = 8;
  c.vocab_size = 37;
  if (family == ModelFamily::Llama) c.tie_embeddings = false, c.bias = false;
  return c;
}

std::vector<float> randn(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(Buckets, CutAtReadyPointsInBackwardOrderAndCoverTheBuffer) {
  // pieces (backward order): [90,100) [60,90) [30,60) [0,30)
  const std::vector<size_t> ready{90, 60, 30, 0};
  const auto one_each = plan_buckets(ready, 100, 1);
  ASSERT_EQ(one_each.size(), 4u);
  EXPECT_EQ(one_each[0], (FlatRange{90, 100}));
  EXPECT_EQ(one_each[3], (FlatRange{0, 30}));
  const auto merged = plan_buckets(ready, 100, 35);  // 10 < 35: joins the next piece
  ASSERT_EQ(merged.size(), 2u);
  EXPECT_EQ(merged[0], (FlatRange{60, 100}));
  EXPECT_EQ(merged[1], (FlatRange{0, 60}));
  const auto whole = plan_buckets(ready, 100, 1000);  // the last piece always closes a bucket
  ASSERT_EQ(whole.size(), 1u);
  EXPECT_EQ(whole[0], (FlatRange{0, 100}));
  EXPECT_THROW(plan_buckets({30, 60, 0}, 100, 1), Error);  // not decreasing
}

TEST(Buckets, OwnedPartsAndTailPartitionEveryBucket) {
  for (size_t len : {1, 5, 8, 13, 1000})
    for (int dp : {1, 2, 3, 4, 8}) {
      const FlatRange b{7, 7 + len};
      size_t next = b.begin;
      for (int r = 0; r < dp; r++) {
        const FlatRange p = owned_part(b, r, dp);
        EXPECT_EQ(p.size(), len / dp);  // equal parts: what reduce-scatter needs
        EXPECT_EQ(p.begin, next) << "len " << len << " dp " << dp << " rank " << r;
        next = p.end;
      }
      const FlatRange tail = bucket_tail(b, dp);
      EXPECT_EQ(tail.begin, next);
      EXPECT_EQ(tail.end, b.end);
      EXPECT_LT(tail.size(), (size_t)dp);
    }
}

// The hook fires at grad_ready_offsets(), in order, and at each point every gradient above it
// is already what the whole backward leaves there.
TEST(Buckets, ModelHookFiresWhereGradientsAreFinal) {
  for (ModelFamily fam : {ModelFamily::GPT2, ModelFamily::Llama}) {
    GPT model(tiny(fam));
    model.init(5);
    const int B = 2, T = 8;
    std::vector<int32_t> in(B * T), tgt(B * T);
    for (int i = 0; i < B * T; i++) in[i] = (i * 7) % 37, tgt[i] = (i * 11 + 3) % 37;
    model.zero_grad();
    model.forward_backward(in.data(), tgt.data(), B, T, 1.f);
    const std::vector<float> final_grads(model.grads(), model.grads() + model.num_params());

    std::vector<size_t> seen;
    size_t mismatched = 0;
    model.zero_grad();
    model.set_grad_ready_hook([&](size_t p) {
      seen.push_back(p);
      for (size_t i = p; i < model.num_params(); i++) mismatched += model.grads()[i] != final_grads[i];
    });
    model.forward_backward(in.data(), tgt.data(), B, T, 1.f);
    model.set_grad_ready_hook(nullptr);
    EXPECT_EQ(seen, model.grad_ready_offsets());
    EXPECT_EQ(mismatched, 0u);
    ASSERT_EQ(seen.size(), (size_t)model.config().n_layer + 2);
    EXPECT_EQ(seen.back(), 0u);
  }
}

TEST(AdamWRanges, AnyCutIsBitIdenticalToTheWholeBuffer) {
  GPT model(tiny(ModelFamily::GPT2));
  const ParamLayout& layout = model.layout();
  const size_t n = layout.total();
  const auto p0 = randn(n, 1);
  const AdamWConfig cfg{0.9f, 0.95f, 1e-8f, 0.1f};
  std::vector<float> whole = p0;
  AdamW ref(layout, cfg);
  // Parts that cut through tensors, as ZeRO's do, with a gap owned by "another rank".
  const std::vector<FlatRange> mine{{0, 101}, {101, 777}, {900, n}};
  std::vector<float> part = p0;
  AdamW sharded(layout, cfg, cpu_backend(), mine);
  EXPECT_EQ(sharded.m().size(), n - 123);
  for (int step = 0; step < 3; step++) {
    const auto g = randn(n, 100 + step);
    ref.step(whole.data(), g.data(), 1e-2f);
    sharded.step(part.data(), g.data(), 1e-2f);
  }
  for (size_t i = 0; i < n; i++) {
    const bool owned = i < 777 || i >= 900;
    if (owned) ASSERT_EQ(part[i], whole[i]) << i;
    else ASSERT_EQ(part[i], p0[i]) << "AdamW wrote outside its ranges at " << i;
  }
}

TEST(AdamWRanges, ShardedSumOfSquaresAddsUpToTheWhole) {
  GPT model(tiny(ModelFamily::Llama));
  const ParamLayout& layout = model.layout();
  const auto g = randn(layout.total(), 9);
  const double whole = grad_sum_squares(layout, g.data(), {}, true, cpu_backend());
  const size_t cut = layout.total() / 3;
  const double a = grad_sum_squares(layout, g.data(), {{0, cut}}, true, cpu_backend());
  const double b = grad_sum_squares(layout, g.data(), {{cut, layout.total()}}, true, cpu_backend());
  EXPECT_NEAR(a + b, whole, 1e-9 * whole);
  // Replicated tensors left out: only TP-sharded ones count.
  double sharded = 0;
  for (const auto& t : layout.tensors())
    if (t.shard_dim >= 0)
      for (size_t i = t.offset; i < t.offset + t.numel; i++) sharded += (double)g[i] * g[i];
  EXPECT_NEAR(grad_sum_squares(layout, g.data(), {}, false, cpu_backend()), sharded, 1e-9 * sharded);
}

// Every flat range of a tensor, as boxes: they tile exactly the range's elements, each box is a
// contiguous run starting at its `first`, and there are at most 2 (rank - 1) + 1 of them.
TEST(FlatRangeBoxes, TileEveryRangeContiguously) {
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{{7}, {3, 5}, {3, 4, 5}, {2, 1, 3}}) {
    const int64_t n = volume(shape);
    for (int64_t b = 0; b <= n; b++)
      for (int64_t e = b; e <= n; e++) {
        std::vector<int> hit(n, 0);
        int64_t expect_first = b;
        const auto boxes = flat_range_boxes(shape, b, e);
        EXPECT_LE(boxes.size(), 2 * (shape.size() - 1) + 1);
        for (const FlatBox& fb : boxes) {
          EXPECT_EQ(fb.first, expect_first);  // in order, back to back
          // Walk the box row-major: its elements must be fb.first, fb.first + 1, ...
          const int64_t vol = volume(fb.box.shape);
          for (int64_t k = 0; k < vol; k++) {
            int64_t rem = k, flat = 0;
            std::vector<int64_t> idx(shape.size());
            for (int d = (int)shape.size() - 1; d >= 0; d--) {
              idx[d] = fb.box.offset[d] + rem % fb.box.shape[d];
              rem /= fb.box.shape[d];
            }
            for (size_t d = 0; d < shape.size(); d++) flat = flat * shape[d] + idx[d];
            ASSERT_EQ(flat, fb.first + k);
            hit[flat]++;
          }
          expect_first += vol;
        }
        EXPECT_EQ(expect_first, e);
        for (int64_t i = 0; i < n; i++) ASSERT_EQ(hit[i], (i >= b && i < e) ? 1 : 0);
      }
  }
}

}  // namespace
}  // namespace cr
