// The attention kernels of core/backend/cuda/attention.cuh, run under the CUDA emulator against
// cr::cpu::attention_forward / _backward / _decode on ragged shapes (T not a multiple of the
// 4-warp block, hs 16 / 48 / 64 / 160 so lanes past hs hold nothing), grouped-query, multi-head
// and multi-query heads, f32 and bf16 storage. Outputs are poisoned with NaN first, so an element
// a kernel forgets to write fails the comparison. The kernels take no workspace: memory is the
// inputs and outputs only (no [T,T] buffer can exist).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
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
