// Document masks and prefix-LM: the key ranges built from a window's tokens and loss mask
// (core/data/attention_mask.h), and the flash attention with those ranges against the simple
// attention that materialises every probability (cpu::ref), through GQA and past the kernel's
// 64-query and 256-key blocks. The negative controls show the tolerances see a dropped mask.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/backend/cpu/ops.h"
#include "core/backend/cpu/reference.h"
#include "core/data/attention_mask.h"
#include "tests/unit/test_util.h"

namespace cr {
namespace {

using testing::randn;
using testing::rel_gap;
constexpr int32_t kEot = 9;


std::vector<int32_t> ranges(const std::vector<int32_t>& tok, const std::vector<uint8_t>& prefix,
                            bool doc, bool plm) {
  std::vector<int32_t> r(2 * tok.size());
  build_kv_range(tok.data(), prefix.empty() ? nullptr : prefix.data(), (int)tok.size(),
                 AttentionMaskSpec{doc, plm, kEot}, r.data());
  return r;
}

// Two packed pairs: [EOT p p | c c] [EOT p | c], the first cut at the window's start.
//   position:  0  1  2  3  4  5  6  7  8  9
//   token:     5  6  7  1  2  9  3  4  8  8
//   prefix:    1  1  0  0  0  1  1  0  0  0     (loss mask 0: a prompt token or the EOT)
TEST(AttentionMask, RangesFollowDocumentsAndPrompts) {
  const std::vector<int32_t> tok = {5, 6, 7, 1, 2, kEot, 3, 4, 8, 8};
  const std::vector<uint8_t> prefix = {1, 1, 0, 0, 0, 1, 1, 0, 0, 0};
  const auto causal = ranges(tok, {}, false, false);
  for (int t = 0; t < 10; t++) {
    EXPECT_EQ(causal[2 * t], 0);
    EXPECT_EQ(causal[2 * t + 1], t);
  }
  const auto doc = ranges(tok, {}, true, false);
  const std::vector<int32_t> doc_lo = {0, 0, 0, 0, 0, 5, 5, 5, 5, 5};
  for (int t = 0; t < 10; t++) EXPECT_EQ(doc[2 * t], doc_lo[t]) << t;
  for (int t = 0; t < 10; t++) EXPECT_EQ(doc[2 * t + 1], t) << t;
  const auto plm = ranges(tok, prefix, false, true);
  const std::vector<int32_t> plm_hi = {1, 1, 2, 3, 4, 6, 6, 7, 8, 9};
  for (int t = 0; t < 10; t++) EXPECT_EQ(plm[2 * t], 0) << t;
  for (int t = 0; t < 10; t++) EXPECT_EQ(plm[2 * t + 1], plm_hi[t]) << t;
  const auto both = ranges(tok, prefix, true, true);
  for (int t = 0; t < 10; t++) EXPECT_EQ(both[2 * t], doc_lo[t]) << t;
  for (int t = 0; t < 10; t++) EXPECT_EQ(both[2 * t + 1], plm_hi[t]) << t;
}

// An EOT starts a new prompt run: a document with an empty completion does not merge its
// prompt with the next document's.
TEST(AttentionMask, EotSplitsAdjacentPrompts) {
  const std::vector<int32_t> tok = {kEot, 1, kEot, 2, 3};
  const std::vector<uint8_t> prefix = {1, 1, 1, 1, 0};
  const auto r = ranges(tok, prefix, false, true);
  const std::vector<int32_t> hi = {1, 1, 3, 3, 4};
  for (int t = 0; t < 5; t++) EXPECT_EQ(r[2 * t + 1], hi[t]) << t;
}

// Random windows of packed documents with prompts: a document starts with EOT, then a prompt
// of 0..(len-1) tokens, then its completion.
struct Window {
  std::vector<int32_t> tok;
  std::vector<uint8_t> prefix;
};
Window random_window(int T, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  auto next = [&](int n) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return (int)(x % (uint64_t)n);
  };
  Window w;
  bool in_prompt = next(2);
  while ((int)w.tok.size() < T) {
    if (next(40) == 0) {  // a new document
      w.tok.push_back(kEot), w.prefix.push_back(1), in_prompt = true;
      continue;
    }
    if (in_prompt && next(12) == 0) in_prompt = false;
    w.tok.push_back(next(8)), w.prefix.push_back(in_prompt ? 1 : 0);
  }
  return w;
}

struct Case {
  int B, T, H, Hkv, hs;
  bool doc, plm;
};

// Flash attention (GQA) with key ranges vs the reference on K/V expanded to every query head.
TEST(AttentionMask, FlashAttentionWithRangesMatchesReference) {
  uint64_t seed = 900;
  for (Case s : {Case{2, 37, 4, 2, 6, true, false}, Case{1, 300, 4, 2, 6, false, true},
                 Case{2, 130, 3, 3, 5, true, true}, Case{1, 520, 2, 1, 8, true, true}}) {
    const int ld = (s.H + 2 * s.Hkv) * s.hs, C = s.H * s.hs, group = s.H / s.Hkv;
    const size_t N = (size_t)s.B * s.T;
    std::vector<int32_t> range(2 * N);
    for (int b = 0; b < s.B; b++) {
      const Window w = random_window(s.T, seed + b);
      build_kv_range(w.tok.data(), w.prefix.data(), s.T, AttentionMaskSpec{s.doc, s.plm, kEot},
                     range.data() + 2 * (size_t)b * s.T);
    }
    auto qkv = randn(N * ld, seed++, 2.f), dout = randn(N * C, seed++);
    std::vector<float> out(N * C), lse(N * s.H), dqkv(N * ld, NAN);
    cpu::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.H, s.Hkv, s.hs,
                           range.data());
    cpu::attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B,
                            s.T, s.H, s.Hkv, s.hs, range.data());
    // The reference on expanded heads (multi-head, 3C per row).
    std::vector<float> e(N * 3 * C);
    for (size_t r = 0; r < N; r++)
      for (int h = 0; h < s.H; h++)
        for (int i = 0; i < s.hs; i++) {
          const float* src = qkv.data() + r * ld;
          float* dst = e.data() + r * 3 * C;
          dst[h * s.hs + i] = src[h * s.hs + i];
          dst[C + h * s.hs + i] = src[C + (h / group) * s.hs + i];
          dst[2 * C + h * s.hs + i] = src[C + (s.Hkv + h / group) * s.hs + i];
        }
    std::vector<float> out_ref(N * C), att(N * s.H * s.T), de(N * 3 * C);
    cpu::ref::attention_forward(out_ref.data(), att.data(), e.data(), s.B, s.T, C, s.H,
                                range.data());
    cpu::ref::attention_backward(de.data(), dout.data(), e.data(), att.data(), s.B, s.T, C, s.H);
    std::vector<float> want(N * ld, 0.f);
    for (size_t r = 0; r < N; r++)
      for (int h = 0; h < s.H; h++)
        for (int i = 0; i < s.hs; i++) {
          const float* src = de.data() + r * 3 * C;
          float* dst = want.data() + r * ld;
          dst[h * s.hs + i] = src[h * s.hs + i];
          dst[C + (h / group) * s.hs + i] += src[C + h * s.hs + i];
          dst[C + (s.Hkv + h / group) * s.hs + i] += src[2 * C + h * s.hs + i];
        }
    EXPECT_LT(rel_gap(out, out_ref), 2e-6) << "T=" << s.T;
    EXPECT_LT(rel_gap(dqkv, want), 1e-5) << "T=" << s.T;

    // Negative control: the causal attention is far from the masked one at this tolerance.
    std::vector<float> causal(N * C), lse_c(N * s.H);
    cpu::attention_forward(causal.data(), lse_c.data(), qkv.data(), s.B, s.T, s.H, s.Hkv, s.hs);
    EXPECT_GT(rel_gap(causal, out_ref), 1e-2) << "T=" << s.T;
  }
}

// Causal ranges given explicitly are the causal kernel, bit for bit (the same blocks, in order).
TEST(AttentionMask, ExplicitCausalRangesAreBitIdentical) {
  const int B = 2, T = 300, H = 2, Hkv = 1, hs = 8, ld = (H + 2 * Hkv) * hs;
  const size_t N = (size_t)B * T;
  auto qkv = randn(N * ld, 7, 2.f), dout = randn(N * H * hs, 8);
  std::vector<int32_t> range(2 * N);
  for (size_t i = 0; i < N; i++) range[2 * i] = 0, range[2 * i + 1] = (int32_t)(i % T);
  std::vector<float> o1(N * H * hs), o2(o1.size()), l1(N * H), l2(N * H), d1(N * ld), d2(N * ld);
  cpu::attention_forward(o1.data(), l1.data(), qkv.data(), B, T, H, Hkv, hs);
  cpu::attention_forward(o2.data(), l2.data(), qkv.data(), B, T, H, Hkv, hs, range.data());
  EXPECT_EQ(o1, o2);
  EXPECT_EQ(l1, l2);
  cpu::attention_backward(d1.data(), dout.data(), qkv.data(), o1.data(), l1.data(), B, T, H, Hkv, hs);
  cpu::attention_backward(d2.data(), dout.data(), qkv.data(), o2.data(), l2.data(), B, T, H, Hkv,
                          hs, range.data());
  EXPECT_EQ(d1, d2);
}

// A negative target is not counted: loss 0 and a zero gradient row; the others are unchanged.
TEST(AttentionMask, IgnoredTargetsHaveNoLossOrGradient) {
  const int N = 4, V = 11;
  auto logits = randn((size_t)N * V, 3, 2.f);
  std::vector<int32_t> all = {1, 2, 3, 4}, some = {1, -1, 3, -1};
  std::vector<float> la(N), ls(N), da(N * V), ds(N * V);
  cpu::crossentropy_forward_backward(la.data(), da.data(), logits.data(), all.data(), N, V, V, 0.25f);
  cpu::crossentropy_forward_backward(ls.data(), ds.data(), logits.data(), some.data(), N, V, V, 0.25f);
  for (int n = 0; n < N; n++) {
    const bool counted = some[n] >= 0;
    EXPECT_EQ(ls[n], counted ? la[n] : 0.f) << n;
    for (int v = 0; v < V; v++) EXPECT_EQ(ds[n * V + v], counted ? da[n * V + v] : 0.f) << n;
  }
}

}  // namespace
}  // namespace cr
