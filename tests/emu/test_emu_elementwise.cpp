// The element-wise kernels of core/backend/cuda/{elementwise,cast,bias_backward}.cuh, run under
// the CUDA emulator against their cr::cpu ops (core/backend/cpu/ops.h): GELU, SwiGLU, the residual
// add, scale, casts, and the linear layer's bias gradient. Ragged sizes (not a multiple of the
// 256-thread block, or of the bias kernel's 32-column tile and 16 row lanes, rows wider than the
// columns summed: ldd > OC), f32 and bf16 storage, outputs poisoned with NaN first. For bf16 the
// oracle is the CPU op on the bf16-rounded inputs. The grid-stride loops are reached with a launch
// whose grid is capped below the element count.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "core/backend/cpu/ops.h"
#include "core/backend/cuda/bias_backward.cuh"
#include "core/backend/cuda/cast.cuh"
#include "core/backend/cuda/elementwise.cuh"
#include "core/tensor/bf16.h"
#include "tests/emu/emu_test_util.h"

namespace {

using namespace cr::emu_test;
using cr::cuda::bf16;

// ---- tolerances: |got - want| <= rel * |want| + abs ---------------------------------------------
// f32: expf here, the CPU's exp_approx (<= 2 ulp) there; the rest is the same formula.
constexpr Tol kF32{1e-5f, 1e-6f};
// The bias gradient: a sum over rows in another order (16 row lanes, then the lanes).
constexpr Tol kF32Sum{1e-4f, 1e-4f};
// bf16: the CPU op on the rounded inputs, then one rounding of the result (<= 1 ulp).
constexpr Tol kBf16{1e-2f, 1e-3f};
constexpr Tol kExact{0.f, 0.f};

template <class T>
constexpr Tol kOut = std::is_same_v<T, float> ? kF32 : kBf16;

// Flat sizes: one element, a ragged single block, a ragged multi-block grid.
const size_t kSizes[] = {1, 37, 1000};

// ---- GELU -------------------------------------------------------------------------------------

template <class T>
void check_gelu(size_t n, uint64_t seed) {
  SCOPED_TRACE("n " + std::to_string(n));
  const auto inp = stored<T>(uniform(n, seed, -6.f, 6.f));  // both tails and the middle
  const auto dout = stored<T>(uniform(n, seed + 1));
  std::vector<float> want(n), want_d(n);
  cr::cpu::gelu_forward(want.data(), inp.data(), n);
  cr::cpu::gelu_backward(want_d.data(), inp.data(), dout.data(), n);

  auto out = poisoned<T>(n), dinp = poisoned<T>(n);
  const auto inp_t = to_storage<T>(inp), dout_t = to_storage<T>(dout);
  cr::cuda::run_gelu_forward(kLaunch, out.data(), inp_t.data(), n);
  cr::cuda::run_gelu_backward(kLaunch, dinp.data(), inp_t.data(), dout_t.data(), n);
  expect_close(to_float(out), want, kOut<T>, "out");
  expect_close(to_float(dinp), want_d, kOut<T>, "dinp");
}

TEST(EmuElementwise, GeluF32) {
  uint64_t seed = 10;
  for (size_t n : kSizes) check_gelu<float>(n, seed += 10);
}
TEST(EmuElementwise, GeluBf16) {
  uint64_t seed = 20;
  for (size_t n : kSizes) check_gelu<bf16>(n, seed += 10);
}

// ---- SwiGLU -----------------------------------------------------------------------------------

template <class T>
void check_swiglu(int N, int F, uint64_t seed) {
  SCOPED_TRACE("N " + std::to_string(N) + " F " + std::to_string(F));
  const size_t NF = (size_t)N * F;
  const auto inp = stored<T>(uniform(2 * NF, seed, -5.f, 5.f));
  const auto dout = stored<T>(uniform(NF, seed + 1));
  std::vector<float> want(NF), want_d(2 * NF);
  cr::cpu::swiglu_forward(want.data(), inp.data(), N, F);
  cr::cpu::swiglu_backward(want_d.data(), inp.data(), dout.data(), N, F);

  auto out = poisoned<T>(NF), dinp = poisoned<T>(2 * NF);
  const auto inp_t = to_storage<T>(inp), dout_t = to_storage<T>(dout);
  cr::cuda::run_swiglu_forward(kLaunch, out.data(), inp_t.data(), N, F);
  cr::cuda::run_swiglu_backward(kLaunch, dinp.data(), inp_t.data(), dout_t.data(), N, F);
  expect_close(to_float(out), want, kOut<T>, "out");
  expect_close(to_float(dinp), want_d, kOut<T>, "dinp");
}

TEST(EmuElementwise, SwigluF32) {
  check_swiglu<float>(37, 13, 100);  // 481 elements: two blocks, rows straddle a block edge
  check_swiglu<float>(5, 33, 110);
  check_swiglu<float>(1, 1, 120);
}
TEST(EmuElementwise, SwigluBf16) {
  check_swiglu<bf16>(37, 13, 200);
  check_swiglu<bf16>(5, 33, 210);
  check_swiglu<bf16>(1, 1, 220);
}

// ---- residual add and scale -------------------------------------------------------------------

template <class T>
void check_residual_and_scale(size_t n, uint64_t seed) {
  SCOPED_TRACE("n " + std::to_string(n));
  const auto a = stored<T>(uniform(n, seed)), b = stored<T>(uniform(n, seed + 1));
  std::vector<float> want(n);
  cr::cpu::residual_forward(want.data(), a.data(), b.data(), n);
  auto out = poisoned<T>(n);
  const auto a_t = to_storage<T>(a), b_t = to_storage<T>(b);
  cr::cuda::run_residual_forward(kLaunch, out.data(), a_t.data(), b_t.data(), n);
  // One f32 add, then (bf16) one rounding: exactly the rounded CPU result.
  expect_close(to_float(out), stored<T>(want), kExact, "residual");

  const float s = 0.37f;
  auto want_x = a;
  cr::cpu::scale(want_x.data(), n, s);
  auto x = to_storage<T>(a);
  cr::cuda::run_scale(kLaunch, x.data(), n, s);
  expect_close(to_float(x), stored<T>(want_x), kExact, "scale");
}

TEST(EmuElementwise, ResidualAndScaleF32) {
  uint64_t seed = 300;
  for (size_t n : kSizes) check_residual_and_scale<float>(n, seed += 10);
}
TEST(EmuElementwise, ResidualAndScaleBf16) {
  uint64_t seed = 400;
  for (size_t n : kSizes) check_residual_and_scale<bf16>(n, seed += 10);
}

// A grid capped below the element count: each thread covers several elements (the grid-stride
// loop that sizes beyond kEwMaxBlocks * 256 take), through the kernel directly.
TEST(EmuElementwise, GridStrideCoversEveryElement) {
  const size_t n = 1000;
  const auto a = uniform(n, 500), b = uniform(n, 501);
  std::vector<float> want(n), out(n, NAN);
  cr::cpu::residual_forward(want.data(), a.data(), b.data(), n);
  kLaunch(dim3(2), dim3(cr::cuda::kEwBlock), cr::cuda::residual_forward_kernel<float>, out.data(),
          a.data(), b.data(), n);
  expect_close(out, want, kExact, "out");
}

// ---- cast ------------------------------------------------------------------------------------

// f32 -> bf16 rounds to nearest even exactly as core/tensor/bf16.h; bf16 -> f32 and same-dtype
// casts are exact. Includes values that sit on rounding ties, infinities and NaN.
TEST(EmuCast, AllDirections) {
  const size_t n = 1000;
  auto x = uniform(n, 600, -100.f, 100.f);
  const uint32_t specials[] = {0x3f808000u /* tie, even down */, 0x3f818000u /* tie, up */,
                               0x7f800000u, 0xff800000u, 0x7fc00000u, 0x00000001u, 0x80000000u};
  for (size_t i = 0; i < std::size(specials); i++) std::memcpy(&x[3 * i], &specials[i], 4);

  auto h = poisoned<bf16>(n);
  cr::cuda::run_cast(kLaunch, h.data(), x.data(), n);
  for (size_t i = 0; i < n; i++) ASSERT_EQ(h[i].__x, cr::f32_to_bf16(x[i])) << i;

  std::vector<float> back(n, NAN);
  cr::cuda::run_cast(kLaunch, back.data(), static_cast<const bf16*>(h.data()), n);
  for (size_t i = 0; i < n; i++) {
    const float want = cr::bf16_to_f32(h[i].__x);
    ASSERT_TRUE(std::memcmp(&back[i], &want, 4) == 0 || (std::isnan(back[i]) && std::isnan(want)))
        << i;
  }

  std::vector<float> copy(n, NAN);
  cr::cuda::run_cast(kLaunch, copy.data(), static_cast<const float*>(x.data()), n);
  for (size_t i = 0; i < n; i++)
    ASSERT_TRUE(std::memcmp(&copy[i], &x[i], 4) == 0 || (std::isnan(copy[i]) && std::isnan(x[i])))
        << i;
  auto h2 = poisoned<bf16>(n);
  cr::cuda::run_cast(kLaunch, h2.data(), static_cast<const bf16*>(h.data()), n);
  for (size_t i = 0; i < n; i++) ASSERT_EQ(h2[i].__x, h[i].__x) << i;
}

// ---- bias gradient ---------------------------------------------------------------------------

// dbias[o] += sum_n dout[n * ldd + o], checked against cpu::matmul_backward's dbias.
template <class T>
void check_bias_backward(int N, int OC, int ldd, uint64_t seed) {
  SCOPED_TRACE("N " + std::to_string(N) + " OC " + std::to_string(OC) + " ldd " +
               std::to_string(ldd));
  const int C = 3;
  const auto dout = stored<T>(uniform((size_t)N * ldd, seed));
  const auto inp = uniform((size_t)N * C, seed + 1), weight = uniform((size_t)OC * C, seed + 2);
  const auto dbias0 = uniform(OC, seed + 3);
  std::vector<float> dweight((size_t)OC * C, 0.f), want = dbias0;
  cr::cpu::matmul_backward(nullptr, dweight.data(), want.data(), dout.data(), inp.data(),
                           weight.data(), N, C, OC, ldd);

  auto dbias = dbias0;
  const auto dout_t = to_storage<T>(dout);
  cr::cuda::run_bias_backward(kLaunch, dbias.data(), dout_t.data(), N, OC, ldd);
  expect_close(dbias, want, kF32Sum, "dbias");
}

TEST(EmuBiasBackward, F32) {
  check_bias_backward<float>(37, 129, 129, 700);  // ragged tile of 1 column, 37 = 2*16 + 5 rows
  check_bias_backward<float>(5, 33, 40, 710);     // fewer rows than lanes; ldd > OC
  check_bias_backward<float>(1, 1, 1, 720);
}
TEST(EmuBiasBackward, Bf16) {
  check_bias_backward<bf16>(37, 129, 129, 800);
  check_bias_backward<bf16>(5, 33, 40, 810);
}

}  // namespace
