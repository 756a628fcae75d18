// The attention kernels of core/backend/cuda/attention.cuh, run under the CUDA emulator against
// cr::cpu::attention_forward / _backward / _decode on ragged shapes (T not a multiple of the
// 4-warp block, hs 16 / 48 / 64 / 160 so lanes past hs hold nothing), grouped-query, multi-head
// and multi-query heads, f32 and bf16 storage. Outputs are poisoned with NaN first, so an element
// a kernel forgets to write fails the comparison. The kernels take no workspace: memory is the
// inputs and outputs only (no [T,T] buffer can exist).
// Key ranges (kv_range, backend.h): document masks, prefix-LM (keys after the query visible) and
// arbitrary in-contract ranges (for which the queries seeing a key are not contiguous), forward
// and backward against the CPU op given the same ranges, with a negative control and the
// causal-range and clamping cases.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "core/backend/cpu/ops.h"
#include "core/backend/cuda/attention.cuh"
#include "core/common/error.h"
#include "core/tensor/bf16.h"
#include "tests/emu/emu_test_util.h"

namespace {

using namespace cr::emu_test;
using cr::cuda::bf16;

struct Shape {
  int B, T, H, Hkv, hs;
};
std::string name(const Shape& s) {
  return fmt::format("B{} T{} H{} Hkv{} hs{}", s.B, s.T, s.H, s.Hkv, s.hs);
}

constexpr Tol kF32Out{1e-5f, 1e-6f}, kF32Grad{1e-4f, 1e-5f}, kBf16{1e-2f, 2e-4f};

// q and k a little larger than v so some softmax rows are peaked and some flat.
std::vector<float> random_qkv(const Shape& s, uint64_t seed) {
  return uniform((size_t)s.B * s.T * (s.H + 2 * s.Hkv) * s.hs, seed, -1.5f, 1.5f);
}

template <class Tp>
void check_forward(const Shape& s, uint64_t seed) {
  SCOPED_TRACE(name(s));
  const size_t n_out = (size_t)s.B * s.T * s.H * s.hs, n_lse = (size_t)s.B * s.H * s.T;
  const std::vector<float> qkv = stored<Tp>(random_qkv(s, seed));
  std::vector<float> want_out(n_out), want_lse(n_lse);
  cr::cpu::attention_forward(want_out.data(), want_lse.data(), qkv.data(), s.B, s.T, s.H, s.Hkv,
                             s.hs);

  const std::vector<Tp> qkv_d = to_storage<Tp>(qkv);
  std::vector<Tp> out = poisoned<Tp>(n_out);
  std::vector<float> lse(n_lse, NAN);
  cr::cuda::run_attention_forward<Tp>(kLaunch, out.data(), lse.data(), qkv_d.data(), s.B, s.T, s.H,
                                      s.Hkv, s.hs);
  const bool f32 = std::is_same_v<Tp, float>;
  expect_close(to_float(out), want_out, f32 ? kF32Out : kBf16, "out");
  expect_close(lse, want_lse, kF32Out, "lse");  // fp32 whatever the storage
}

// The backward alone: both sides get the same qkv, dout, out and lse (the CPU forward's, stored
// as Tp), so only the gradient arithmetic is compared.
template <class Tp>
void check_backward(const Shape& s, uint64_t seed) {
  SCOPED_TRACE(name(s));
  const size_t n_qkv = (size_t)s.B * s.T * (s.H + 2 * s.Hkv) * s.hs;
  const size_t n_out = (size_t)s.B * s.T * s.H * s.hs, n_lse = (size_t)s.B * s.H * s.T;
  const std::vector<float> qkv = stored<Tp>(random_qkv(s, seed));
  const std::vector<float> dout = stored<Tp>(uniform(n_out, seed + 1));
  std::vector<float> out(n_out), lse(n_lse);
  cr::cpu::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.H, s.Hkv, s.hs);
  out = stored<Tp>(out);
  std::vector<float> want(n_qkv);
  cr::cpu::attention_backward(want.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B,
                              s.T, s.H, s.Hkv, s.hs);

  const std::vector<Tp> qkv_d = to_storage<Tp>(qkv), dout_d = to_storage<Tp>(dout),
                        out_d = to_storage<Tp>(out);
  std::vector<Tp> dqkv = poisoned<Tp>(n_qkv);
  cr::cuda::run_attention_backward<Tp>(kLaunch, dqkv.data(), dout_d.data(), qkv_d.data(),
                                       out_d.data(), lse.data(), s.B, s.T, s.H, s.Hkv, s.hs);
  expect_close(to_float(dqkv), want, std::is_same_v<Tp, float> ? kF32Grad : kBf16, "dqkv");
}

template <class Tp>
void check_decode(int len, int H, int Hkv, int hs, uint64_t seed) {
  SCOPED_TRACE("len" + std::to_string(len) + " H" + std::to_string(H) + " Hkv" +
               std::to_string(Hkv) + " hs" + std::to_string(hs));
  const size_t n_cache = (size_t)len * Hkv * hs;
  const std::vector<float> q = stored<Tp>(uniform((size_t)H * hs, seed, -1.5f, 1.5f));
  const std::vector<float> kc = stored<Tp>(uniform(n_cache, seed + 1, -1.5f, 1.5f));
  const std::vector<float> vc = stored<Tp>(uniform(n_cache, seed + 2));
  std::vector<float> want((size_t)H * hs);
  cr::cpu::attention_decode(want.data(), q.data(), kc.data(), vc.data(), len, H, Hkv, hs);

  const std::vector<Tp> q_d = to_storage<Tp>(q), kc_d = to_storage<Tp>(kc),
                        vc_d = to_storage<Tp>(vc);
  std::vector<Tp> out = poisoned<Tp>((size_t)H * hs);
  cr::cuda::run_attention_decode<Tp>(kLaunch, out.data(), q_d.data(), kc_d.data(), vc_d.data(), len,
                                     H, Hkv, hs);
  expect_close(to_float(out), want, std::is_same_v<Tp, float> ? kF32Out : kBf16, "out");
}

// ---- key ranges ----------------------------------------------------------------------------

enum class Mask { Document, PrefixLm, Random };
const char* mask_name(Mask m) {
  return m == Mask::Document ? "document" : m == Mask::PrefixLm ? "prefix-LM" : "random";
}

// Documents of sequence b: lengths drawn from [1, max_len] (the last one cut at T); sequence 1
// starts with one long document so ranges also span more than one 32-row chunk.
std::vector<int> doc_starts(int b, int T, cr::Rng& rng) {
  std::vector<int> starts;
  for (int t = 0; t < T;) {
    starts.push_back(t);
    t += (b % 2 == 1 && t == 0) ? 40 : 1 + (int)rng.below(12);
  }
  return starts;
}

// kv_range [B,T,2]. Document: [start of t's document, t]. Prefix-LM: each document is a prompt
// (its first p tokens, p >= 1) then a completion; a prompt token sees its whole prompt
// [start, prompt end], a completion token [start, t]. Random: lo in [0, t], hi in [t, T-1].
std::vector<int32_t> make_ranges(Mask m, int B, int T, uint64_t seed) {
  cr::Rng rng(seed);
  std::vector<int32_t> r(2 * (size_t)B * T);
  for (int b = 0; b < B; b++) {
    int32_t* row = r.data() + 2 * (size_t)b * T;
    if (m == Mask::Random) {
      for (int t = 0; t < T; t++) {
        row[2 * t] = (int32_t)rng.below((uint64_t)t + 1);
        row[2 * t + 1] = t + (int32_t)rng.below((uint64_t)(T - t));
      }
      continue;
    }
    std::vector<int> starts = doc_starts(b, T, rng);
    starts.push_back(T);
    for (size_t d = 0; d + 1 < starts.size(); d++) {
      const int d0 = starts[d], d1 = starts[d + 1];
      const int p = m == Mask::PrefixLm ? 1 + (int)rng.below((uint64_t)(d1 - d0)) : 0;
      for (int t = d0; t < d1; t++) {
        row[2 * t] = d0;
        row[2 * t + 1] = t < d0 + p ? d0 + p - 1 : t;
      }
    }
  }
  for (size_t i = 0; i < r.size() / 2; i++) {  // the contract the kernels rely on
    const int t = (int)(i % (size_t)T);
    EXPECT_TRUE(0 <= r[2 * i] && r[2 * i] <= t && t <= r[2 * i + 1] && r[2 * i + 1] < T) << i;
  }
  return r;
}

// Elements of got outside tol of want (no failure reported: for negative controls).
template <class R>
size_t count_off(const std::vector<float>& got, const std::vector<float>& want, Tol<R> tol) {
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); i++)
    if (!(std::fabs(got[i] - want[i]) <= tol.rel * std::fabs(want[i]) + tol.abs)) bad++;
  return bad;
}

// What a masked forward + backward of the kernels produced.
struct Grads {
  std::vector<float> out, lse, dqkv;
};

// The kernels' forward and backward with `kernel_range` (nullptr = causal), their backward fed
// the CPU forward's out and lse (as in check_backward); want: the CPU op with `range`.
template <class Tp>
void run_masked(const Shape& s, uint64_t seed, const int32_t* range, const int32_t* kernel_range,
                Grads& got, Grads& want) {
  const size_t n_qkv = (size_t)s.B * s.T * (s.H + 2 * s.Hkv) * s.hs;
  const size_t n_out = (size_t)s.B * s.T * s.H * s.hs, n_lse = (size_t)s.B * s.H * s.T;
  const std::vector<float> qkv = stored<Tp>(random_qkv(s, seed));
  const std::vector<float> dout = stored<Tp>(uniform(n_out, seed + 1));
  want = Grads{std::vector<float>(n_out), std::vector<float>(n_lse), std::vector<float>(n_qkv)};
  cr::cpu::attention_forward(want.out.data(), want.lse.data(), qkv.data(), s.B, s.T, s.H, s.Hkv,
                             s.hs, range);
  const std::vector<float> out = stored<Tp>(want.out);
  cr::cpu::attention_backward(want.dqkv.data(), dout.data(), qkv.data(), out.data(),
                              want.lse.data(), s.B, s.T, s.H, s.Hkv, s.hs, range);

  const std::vector<Tp> qkv_d = to_storage<Tp>(qkv), dout_d = to_storage<Tp>(dout),
                        out_d = to_storage<Tp>(out);
  std::vector<Tp> o = poisoned<Tp>(n_out), dqkv = poisoned<Tp>(n_qkv);
  got.lse.assign(n_lse, NAN);
  cr::cuda::run_attention_forward<Tp>(kLaunch, o.data(), got.lse.data(), qkv_d.data(), s.B, s.T,
                                      s.H, s.Hkv, s.hs, kernel_range);
  cr::cuda::run_attention_backward<Tp>(kLaunch, dqkv.data(), dout_d.data(), qkv_d.data(),
                                       out_d.data(), want.lse.data(), s.B, s.T, s.H, s.Hkv, s.hs,
                                       kernel_range);
  got.out = to_float(o);
  got.dqkv = to_float(dqkv);
}

template <class Tp>
void check_masked(const Shape& s, Mask m, uint64_t seed) {
  SCOPED_TRACE(name(s) + " " + mask_name(m));
  const std::vector<int32_t> range = make_ranges(m, s.B, s.T, seed + 7);
  Grads got, want;
  run_masked<Tp>(s, seed, range.data(), range.data(), got, want);
  const bool f32 = std::is_same_v<Tp, float>;
  expect_close(got.out, want.out, f32 ? kF32Out : kBf16, "out");
  expect_close(got.lse, want.lse, kF32Out, "lse");
  expect_close(got.dqkv, want.dqkv, f32 ? kF32Grad : kBf16, "dqkv");
}

// T = 45 and 37: a partial second chunk; grouped-query, multi-query and multi-head (each mask on
// two of them, to keep the emulated runs to a few seconds).
const Shape kMaskShapes[] = {{2, 45, 4, 2, 48}, {2, 45, 2, 1, 16}, {2, 37, 2, 2, 64}};

TEST(EmuAttentionMask, DocumentF32) {
  check_masked<float>(kMaskShapes[0], Mask::Document, 600);
  check_masked<float>(kMaskShapes[2], Mask::Document, 605);
}
TEST(EmuAttentionMask, PrefixLmF32) {
  check_masked<float>(kMaskShapes[0], Mask::PrefixLm, 610);
  check_masked<float>(kMaskShapes[1], Mask::PrefixLm, 615);
}
// Any in-contract range: the queries that see a key need not be contiguous (dK/dV tests each).
TEST(EmuAttentionMask, RandomRangesF32) {
  check_masked<float>(kMaskShapes[1], Mask::Random, 620);
  check_masked<float>(kMaskShapes[2], Mask::Random, 625);
}
TEST(EmuAttentionMask, Bf16) {
  check_masked<bf16>(kMaskShapes[1], Mask::PrefixLm, 630);
  check_masked<bf16>(kMaskShapes[2], Mask::Document, 640);
}

// Negative control: the kernels without the range (causal) against the masked reference differ
// in out, lse and dqkv, for both masks, so the tests above see the range.
TEST(EmuAttentionMask, DroppingTheRangeMismatches) {
  const Shape s = kMaskShapes[1];
  for (Mask m : {Mask::Document, Mask::PrefixLm}) {
    SCOPED_TRACE(mask_name(m));
    const std::vector<int32_t> range = make_ranges(m, s.B, s.T, 657);
    Grads got, want;
    run_masked<float>(s, 650, range.data(), nullptr, got, want);
    EXPECT_GT(count_off(got.out, want.out, kF32Out), got.out.size() / 10);
    EXPECT_GT(count_off(got.lse, want.lse, kF32Out), got.lse.size() / 10);
    EXPECT_GT(count_off(got.dqkv, want.dqkv, kF32Grad), got.dqkv.size() / 10);
  }
}

// The causal range [0, t] gives the causal path's results bit for bit; a range outside the
// contract is clamped into [0, T) around t (here: every query sees the whole sequence), never
// read past (ASan would see it), and equals the in-contract bidirectional range.
TEST(EmuAttentionMask, CausalRangeAndClamping) {
  const Shape s{2, 37, 2, 1, 16};
  std::vector<int32_t> causal(2 * (size_t)s.B * s.T), wild(causal.size()), full(causal.size());
  for (size_t i = 0; i < causal.size() / 2; i++) {
    const int t = (int)(i % (size_t)s.T);
    causal[2 * i] = 0, causal[2 * i + 1] = t;
    wild[2 * i] = -1000 - t, wild[2 * i + 1] = s.T + 1000;
    full[2 * i] = 0, full[2 * i + 1] = s.T - 1;
  }
  Grads a, b, want;
  run_masked<float>(s, 660, nullptr, nullptr, a, want);
  run_masked<float>(s, 660, nullptr, causal.data(), b, want);
  expect_close(b.out, a.out, Tol<float>{0.f, 0.f}, "out");
  expect_close(b.lse, a.lse, Tol<float>{0.f, 0.f}, "lse");
  expect_close(b.dqkv, a.dqkv, Tol<float>{0.f, 0.f}, "dqkv");
  run_masked<float>(s, 670, full.data(), full.data(), a, want);
  run_masked<float>(s, 670, full.data(), wild.data(), b, want);
  expect_close(b.out, a.out, Tol<float>{0.f, 0.f}, "clamped out");
  expect_close(b.dqkv, a.dqkv, Tol<float>{0.f, 0.f}, "clamped dqkv");
  expect_close(b.dqkv, want.dqkv, kF32Grad, "clamped dqkv vs the CPU");
}

// T = 37 (more than one 32-row chunk, the last one partial); grouped-query, multi-head,
// multi-query; and hs = 160 (eight channel slots per lane, the last ones partly past hs).
const Shape kShapes[] = {{2, 37, 4, 2, 16}, {2, 37, 4, 2, 48}, {1, 37, 3, 3, 64},
                         {2, 37, 4, 1, 48}, {1, 6, 2, 1, 160}};

class EmuAttentionShape : public ::testing::TestWithParam<int> {
 protected:
  const Shape& shape() const { return kShapes[GetParam()]; }
  uint64_t seed(int test) const { return 1000u * test + 10u * GetParam(); }
};

TEST_P(EmuAttentionShape, ForwardF32) { check_forward<float>(shape(), seed(1)); }
TEST_P(EmuAttentionShape, ForwardBf16) { check_forward<bf16>(shape(), seed(2)); }
TEST_P(EmuAttentionShape, BackwardF32) { check_backward<float>(shape(), seed(3)); }
TEST_P(EmuAttentionShape, BackwardBf16) { check_backward<bf16>(shape(), seed(4)); }

INSTANTIATE_TEST_SUITE_P(Shapes, EmuAttentionShape,
                         ::testing::Range(0, (int)(sizeof(kShapes) / sizeof(kShapes[0]))),
                         [](const ::testing::TestParamInfo<int>& info) {
                           const Shape& s = kShapes[info.param];
                           return "B" + std::to_string(s.B) + "T" + std::to_string(s.T) + "H" +
                                  std::to_string(s.H) + "Hkv" + std::to_string(s.Hkv) + "hs" +
                                  std::to_string(s.hs);
                         });

TEST(EmuAttention, Decode) {
  check_decode<float>(37, 4, 2, 48, 500);
  check_decode<float>(1, 3, 3, 16, 510);  // a single cached position
  check_decode<float>(23, 4, 1, 200, 520);
  check_decode<bf16>(37, 4, 2, 64, 530);
  check_decode<bf16>(23, 6, 3, 48, 540);
}

TEST(EmuAttention, RejectsBadHeads) {
  std::vector<float> buf(16);
  auto message = [](auto f) -> std::string {
    try {
      f();
    } catch (const cr::Error& e) {
      return e.what();
    }
    return "";
  };
  const std::string wide = message([&] {
    cr::cuda::run_attention_forward<float>(kLaunch, buf.data(), buf.data(), buf.data(), 1, 1, 1, 1,
                                           257);
  });
  EXPECT_NE(wide.find("attention_forward"), std::string::npos) << wide;
  EXPECT_NE(wide.find("hs=257"), std::string::npos) << wide;
  const std::string group = message([&] {
    cr::cuda::run_attention_decode<float>(kLaunch, buf.data(), buf.data(), buf.data(), buf.data(),
                                          1, 3, 2, 4);
  });
  EXPECT_NE(group.find("attention_decode"), std::string::npos) << group;
  EXPECT_NE(group.find("Hkv=2"), std::string::npos) << group;
}

}  // namespace
