// The LayerNorm, RMSNorm and embedding kernels of core/backend/cuda/{layernorm,rmsnorm,
// embedding}.cuh, run under the CUDA emulator against their cr::cpu ops (core/backend/cpu/ops.h):
// ragged shapes (rows not a multiple of the 4 rows of a block, channels not a multiple of the
// warp, row counts that give the parameter-gradient reduction several chunks with a ragged last
// one), f32 and bf16 storage, outputs poisoned with NaN first. For bf16 the oracle is the CPU op
// on the bf16-rounded inputs. The embedding runs vocabulary-parallel, with tokens outside the
// shard and tokens repeated many times (whose gradient must add up in the CPU's order).
#include <gtest/gtest.h>

#include <climits>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "core/backend/cpu/ops.h"
#include "core/backend/cuda/embedding.cuh"
#include "core/backend/cuda/layernorm.cuh"
#include "core/backend/cuda/rmsnorm.cuh"
#include "core/common/rng.h"
#include "core/tensor/bf16.h"
#include "tests/emu/emu_test_util.h"

namespace {

using namespace cr::emu_test;
using cr::cuda::bf16;

// ---- tolerances: |got - want| <= rel * |want| + abs ---------------------------------------------
// Row outputs and statistics: the same fp32 math as the CPU, summed in another order (warp
// butterfly instead of a sequential loop).
constexpr Tol kF32{1e-5f, 1e-5f};
// Parameter gradients: sums over all rows in another order (chunks, lanes); f32 in both dtypes
// (for bf16 the inputs are the same rounded values on both sides).
constexpr Tol kF32Sum{1e-4f, 1e-4f};
// bf16 storage: the CPU op on the rounded inputs, then one rounding of the result (<= 1 ulp,
// 2^-8 relative), plus room for fp32 noise pushing a value across a rounding boundary.
constexpr Tol kBf16{1e-2f, 1e-3f};
// Exact: the embedding adds in the CPU's order (f32), or rounds the CPU's f32 sum once (bf16).
constexpr Tol kExact{0.f, 0.f};

template <class T>
constexpr Tol kOut = std::is_same_v<T, float> ? kF32 : kBf16;

struct NormShape {
  int N, C;
};
// 37 x 129: ragged rows and channels; 5 x 33: one lane with two channels; 133 x 40: three
// row chunks in the parameter-gradient reduction (64 rows each, the last 5); 3 x 1: C < lanes.
const NormShape kNormShapes[] = {{37, 129}, {5, 33}, {133, 40}, {3, 1}};
std::string name(const NormShape& s) {
  return "N" + std::to_string(s.N) + " C" + std::to_string(s.C);
}
constexpr float kEps = 1e-5f;

// ---- LayerNorm -------------------------------------------------------------------------------

template <class T>
void check_layernorm_forward(const NormShape& s, uint64_t seed) {
  SCOPED_TRACE(name(s));
  const size_t NC = (size_t)s.N * s.C;
  // An offset mean (3) so the two-pass variance matters.
  const auto inp = stored<T>(uniform(NC, seed, 2.f, 4.f));
  const auto w = stored<T>(uniform(s.C, seed + 1, 0.5f, 1.5f));
  const auto b = stored<T>(uniform(s.C, seed + 2));
  std::vector<float> want(NC), want_mean(s.N), want_rstd(s.N);
  cr::cpu::layernorm_forward(want.data(), want_mean.data(), want_rstd.data(), inp.data(),
                             w.data(), b.data(), s.N, s.C, kEps);

  auto out = poisoned<T>(NC);
  std::vector<float> mean(s.N, NAN), rstd(s.N, NAN);
  const auto inp_t = to_storage<T>(inp), w_t = to_storage<T>(w), b_t = to_storage<T>(b);
  cr::cuda::run_layernorm_forward(kLaunch, out.data(), mean.data(), rstd.data(), inp_t.data(),
                                  w_t.data(), b_t.data(), s.N, s.C, kEps);
  expect_close(to_float(out), want, kOut<T>, "out");
  expect_close(mean, want_mean, kF32, "mean");
  expect_close(rstd, want_rstd, kF32, "rstd");

  // Recompute from the saved statistics: bit for bit the forward's output.
  auto again = poisoned<T>(NC);
  cr::cuda::run_layernorm_apply(kLaunch, again.data(), inp_t.data(), mean.data(), rstd.data(),
                                w_t.data(), b_t.data(), s.N, s.C);
  expect_close(to_float(again), to_float(out), kExact, "apply vs forward");
  std::vector<float> want_apply(NC);
  cr::cpu::layernorm_apply(want_apply.data(), inp.data(), mean.data(), rstd.data(), w.data(),
                           b.data(), s.N, s.C);
  expect_close(to_float(again), want_apply, kOut<T>, "apply");
}

// x = a + b as T stores it, and the norm of that stored x.
template <class T>
void check_residual_layernorm(const NormShape& s, uint64_t seed) {
  SCOPED_TRACE(name(s));
  const size_t NC = (size_t)s.N * s.C;
  const auto a = stored<T>(uniform(NC, seed, 1.f, 3.f));
  const auto bb = stored<T>(uniform(NC, seed + 1));
  const auto w = stored<T>(uniform(s.C, seed + 2, 0.5f, 1.5f));
  const auto bias = stored<T>(uniform(s.C, seed + 3));
  std::vector<float> sum(NC);
  cr::cpu::residual_forward(sum.data(), a.data(), bb.data(), NC);
  const auto want_x = stored<T>(sum);
  std::vector<float> want(NC), want_mean(s.N), want_rstd(s.N);
  cr::cpu::layernorm_forward(want.data(), want_mean.data(), want_rstd.data(), want_x.data(),
                             w.data(), bias.data(), s.N, s.C, kEps);

  auto x = poisoned<T>(NC), out = poisoned<T>(NC);
  std::vector<float> mean(s.N, NAN), rstd(s.N, NAN);
  const auto a_t = to_storage<T>(a), b_t = to_storage<T>(bb), w_t = to_storage<T>(w),
             bias_t = to_storage<T>(bias);
  cr::cuda::run_residual_layernorm_forward(kLaunch, x.data(), out.data(), mean.data(),
                                           rstd.data(), a_t.data(), b_t.data(), w_t.data(),
                                           bias_t.data(), s.N, s.C, kEps);
  expect_close(to_float(x), want_x, kExact, "x");
  expect_close(to_float(out), want, kOut<T>, "out");
  expect_close(mean, want_mean, kF32, "mean");
  expect_close(rstd, want_rstd, kF32, "rstd");
}

template <class T>
void check_layernorm_backward(const NormShape& s, uint64_t seed) {
  SCOPED_TRACE(name(s));
  const size_t NC = (size_t)s.N * s.C;
  const auto inp = stored<T>(uniform(NC, seed, 2.f, 4.f));
  const auto w = stored<T>(uniform(s.C, seed + 1, 0.5f, 1.5f));
  const auto b = stored<T>(uniform(s.C, seed + 2));
  const auto dout = stored<T>(uniform(NC, seed + 3));
  const auto dinp0 = stored<T>(uniform(NC, seed + 4));  // accumulated into
  const auto dw0 = uniform(s.C, seed + 5), db0 = uniform(s.C, seed + 6);
  std::vector<float> fwd(NC), mean(s.N), rstd(s.N);
  cr::cpu::layernorm_forward(fwd.data(), mean.data(), rstd.data(), inp.data(), w.data(), b.data(),
                             s.N, s.C, kEps);
  auto want_dinp = dinp0;
  auto want_dw = dw0, want_db = db0;
  cr::cpu::layernorm_backward(want_dinp.data(), want_dw.data(), want_db.data(), dout.data(),
                              inp.data(), w.data(), mean.data(), rstd.data(), s.N, s.C);

  auto dinp = to_storage<T>(dinp0);
  auto dw = dw0, db = db0;
  std::vector<float> scratch(cr::cuda::layernorm_backward_scratch_floats(s.N, s.C), NAN);
  const auto dout_t = to_storage<T>(dout), inp_t = to_storage<T>(inp), w_t = to_storage<T>(w);
  cr::cuda::run_layernorm_backward(kLaunch, dinp.data(), dw.data(), db.data(), scratch.data(),
                                   dout_t.data(), inp_t.data(), w_t.data(), mean.data(),
                                   rstd.data(), s.N, s.C);
  expect_close(to_float(dinp), want_dinp, kOut<T>, "dinp");
  expect_close(dw, want_dw, kF32Sum, "dweight");
  expect_close(db, want_db, kF32Sum, "dbias");
}

TEST(EmuLayerNorm, ForwardAndApplyF32) {
  uint64_t seed = 100;
  for (const auto& s : kNormShapes) check_layernorm_forward<float>(s, seed += 10);
}
TEST(EmuLayerNorm, ForwardAndApplyBf16) {
  uint64_t seed = 200;
  for (const auto& s : kNormShapes) check_layernorm_forward<bf16>(s, seed += 10);
}
TEST(EmuLayerNorm, ResidualF32) {
  uint64_t seed = 300;
  for (const auto& s : kNormShapes) check_residual_layernorm<float>(s, seed += 10);
}
TEST(EmuLayerNorm, ResidualBf16) {
  uint64_t seed = 400;
  for (const auto& s : kNormShapes) check_residual_layernorm<bf16>(s, seed += 10);
}
TEST(EmuLayerNorm, BackwardF32) {
  uint64_t seed = 500;
  for (const auto& s : kNormShapes) check_layernorm_backward<float>(s, seed += 10);
}
TEST(EmuLayerNorm, BackwardBf16) {
  uint64_t seed = 600;
  for (const auto& s : kNormShapes) check_layernorm_backward<bf16>(s, seed += 10);
}

// The parameter gradients do not depend on scheduling: two runs agree bit for bit.
TEST(EmuLayerNorm, BackwardIsDeterministic) {
  const NormShape s{133, 40};
  const size_t NC = (size_t)s.N * s.C;
  const auto inp = uniform(NC, 1), w = uniform(s.C, 2), dout = uniform(NC, 3);
  std::vector<float> fwd(NC), mean(s.N), rstd(s.N), b(s.C, 0.f);
  cr::cpu::layernorm_forward(fwd.data(), mean.data(), rstd.data(), inp.data(), w.data(), b.data(),
                             s.N, s.C, kEps);
  std::vector<float> runs[2][2];
  for (auto& r : runs) {
    std::vector<float> dinp(NC, 0.f), dw(s.C, 0.f), db(s.C, 0.f);
    std::vector<float> scratch(cr::cuda::layernorm_backward_scratch_floats(s.N, s.C));
    cr::cuda::run_layernorm_backward(kLaunch, dinp.data(), dw.data(), db.data(), scratch.data(),
                                     dout.data(), inp.data(), w.data(), mean.data(), rstd.data(),
                                     s.N, s.C);
    r[0] = dw;
    r[1] = db;
  }
  EXPECT_EQ(runs[0][0], runs[1][0]);
  EXPECT_EQ(runs[0][1], runs[1][1]);
}

// ---- RMSNorm ---------------------------------------------------------------------------------

template <class T>
void check_rmsnorm_forward(const NormShape& s, uint64_t seed) {
  SCOPED_TRACE(name(s));
  const size_t NC = (size_t)s.N * s.C;
  const auto inp = stored<T>(uniform(NC, seed));
  const auto w = stored<T>(uniform(s.C, seed + 1, 0.5f, 1.5f));
  std::vector<float> want(NC), want_rstd(s.N);
  cr::cpu::rmsnorm_forward(want.data(), want_rstd.data(), inp.data(), w.data(), s.N, s.C, kEps);

  auto out = poisoned<T>(NC);
  std::vector<float> rstd(s.N, NAN);
  const auto inp_t = to_storage<T>(inp), w_t = to_storage<T>(w);
  cr::cuda::run_rmsnorm_forward(kLaunch, out.data(), rstd.data(), inp_t.data(), w_t.data(), s.N,
                                s.C, kEps);
  expect_close(to_float(out), want, kOut<T>, "out");
  expect_close(rstd, want_rstd, kF32, "rstd");

  auto again = poisoned<T>(NC);
  cr::cuda::run_rmsnorm_apply(kLaunch, again.data(), inp_t.data(), rstd.data(), w_t.data(), s.N,
                              s.C);
  expect_close(to_float(again), to_float(out), kExact, "apply vs forward");
  std::vector<float> want_apply(NC);
  cr::cpu::rmsnorm_apply(want_apply.data(), inp.data(), rstd.data(), w.data(), s.N, s.C);
  expect_close(to_float(again), want_apply, kOut<T>, "apply");
}

template <class T>
void check_residual_rmsnorm(const NormShape& s, uint64_t seed) {
  SCOPED_TRACE(name(s));
  const size_t NC = (size_t)s.N * s.C;
  const auto a = stored<T>(uniform(NC, seed, 1.f, 3.f));
  const auto bb = stored<T>(uniform(NC, seed + 1));
  const auto w = stored<T>(uniform(s.C, seed + 2, 0.5f, 1.5f));
  std::vector<float> sum(NC);
  cr::cpu::residual_forward(sum.data(), a.data(), bb.data(), NC);
  const auto want_x = stored<T>(sum);
  std::vector<float> want(NC), want_rstd(s.N);
  cr::cpu::rmsnorm_forward(want.data(), want_rstd.data(), want_x.data(), w.data(), s.N, s.C, kEps);

  auto x = poisoned<T>(NC), out = poisoned<T>(NC);
  std::vector<float> rstd(s.N, NAN);
  const auto a_t = to_storage<T>(a), b_t = to_storage<T>(bb), w_t = to_storage<T>(w);
  cr::cuda::run_residual_rmsnorm_forward(kLaunch, x.data(), out.data(), rstd.data(), a_t.data(),
                                         b_t.data(), w_t.data(), s.N, s.C, kEps);
  expect_close(to_float(x), want_x, kExact, "x");
  expect_close(to_float(out), want, kOut<T>, "out");
  expect_close(rstd, want_rstd, kF32, "rstd");
}

template <class T>
void check_rmsnorm_backward(const NormShape& s, uint64_t seed) {
  SCOPED_TRACE(name(s));
  const size_t NC = (size_t)s.N * s.C;
  const auto inp = stored<T>(uniform(NC, seed));
  const auto w = stored<T>(uniform(s.C, seed + 1, 0.5f, 1.5f));
  const auto dout = stored<T>(uniform(NC, seed + 2));
  const auto dinp0 = stored<T>(uniform(NC, seed + 3));
  const auto dw0 = uniform(s.C, seed + 4);
  std::vector<float> fwd(NC), rstd(s.N);
  cr::cpu::rmsnorm_forward(fwd.data(), rstd.data(), inp.data(), w.data(), s.N, s.C, kEps);
  auto want_dinp = dinp0;
  auto want_dw = dw0;
  cr::cpu::rmsnorm_backward(want_dinp.data(), want_dw.data(), dout.data(), inp.data(), w.data(),
                            rstd.data(), s.N, s.C);

  auto dinp = to_storage<T>(dinp0);
  auto dw = dw0;
  std::vector<float> scratch(cr::cuda::rmsnorm_backward_scratch_floats(s.N, s.C), NAN);
  const auto dout_t = to_storage<T>(dout), inp_t = to_storage<T>(inp), w_t = to_storage<T>(w);
  cr::cuda::run_rmsnorm_backward(kLaunch, dinp.data(), dw.data(), scratch.data(), dout_t.data(),
                                 inp_t.data(), w_t.data(), rstd.data(), s.N, s.C);
  expect_close(to_float(dinp), want_dinp, kOut<T>, "dinp");
  expect_close(dw, want_dw, kF32Sum, "dweight");
}

TEST(EmuRmsNorm, ForwardAndApplyF32) {
  uint64_t seed = 1100;
  for (const auto& s : kNormShapes) check_rmsnorm_forward<float>(s, seed += 10);
}
TEST(EmuRmsNorm, ForwardAndApplyBf16) {
  uint64_t seed = 1200;
  for (const auto& s : kNormShapes) check_rmsnorm_forward<bf16>(s, seed += 10);
}
TEST(EmuRmsNorm, ResidualF32) {
  uint64_t seed = 1300;
  for (const auto& s : kNormShapes) check_residual_rmsnorm<float>(s, seed += 10);
}
TEST(EmuRmsNorm, ResidualBf16) {
  uint64_t seed = 1400;
  for (const auto& s : kNormShapes) check_residual_rmsnorm<bf16>(s, seed += 10);
}
TEST(EmuRmsNorm, BackwardF32) {
  uint64_t seed = 1500;
  for (const auto& s : kNormShapes) check_rmsnorm_backward<float>(s, seed += 10);
}
TEST(EmuRmsNorm, BackwardBf16) {
  uint64_t seed = 1600;
  for (const auto& s : kNormShapes) check_rmsnorm_backward<bf16>(s, seed += 10);
}

// ---- embedding -------------------------------------------------------------------------------

struct EmbShape {
  int B, T, C, V;                     // V: the whole vocabulary tokens are drawn from
  int vocab_start, vocab_count;       // this shard (INT32_MAX: the whole table)
  int hot;                            // tokens drawn from [0, hot) half the time: many repeats
  bool wpe;
};
const EmbShape kEmbShapes[] = {
    {3, 13, 129, 50, 10, 20, 12, true},        // shard [10, 30): tokens below, in and above it
    {2, 5, 33, 7, 0, INT32_MAX, 3, true},      // whole table, tokens repeated up to ~10 times
    {1, 150, 40, 300, 100, 100, 105, false},   // no wpe; two chain-search tiles (128 rows)
};
std::string name(const EmbShape& s) {
  return "B" + std::to_string(s.B) + " T" + std::to_string(s.T) + " C" + std::to_string(s.C) +
         " shard " + std::to_string(s.vocab_start) + "+" +
         (s.vocab_count == INT32_MAX ? std::string("all") : std::to_string(s.vocab_count)) +
         (s.wpe ? "" : " no wpe");
}
int rows(const EmbShape& s) { return s.vocab_count == INT32_MAX ? s.V : s.vocab_count; }

std::vector<int32_t> tokens(const EmbShape& s, uint64_t seed) {
  cr::Rng rng(seed);
  std::vector<int32_t> t((size_t)s.B * s.T);
  for (auto& v : t) v = (int32_t)(rng.uniform() < 0.5 ? rng.below(s.hot) : rng.below(s.V));
  return t;
}

template <class T>
void check_embedding_forward(const EmbShape& s, uint64_t seed) {
  SCOPED_TRACE(name(s));
  const size_t NC = (size_t)s.B * s.T * s.C;
  const auto tok = tokens(s, seed);
  const auto wte = stored<T>(uniform((size_t)rows(s) * s.C, seed + 1));
  const auto wpe = s.wpe ? stored<T>(uniform((size_t)s.T * s.C, seed + 2)) : std::vector<float>{};
  std::vector<float> want(NC);
  cr::cpu::embedding_forward(want.data(), tok.data(), wte.data(), s.wpe ? wpe.data() : nullptr,
                             s.B, s.T, s.C, s.vocab_start, s.vocab_count);

  auto out = poisoned<T>(NC);
  const auto wte_t = to_storage<T>(wte), wpe_t = to_storage<T>(wpe);
  cr::cuda::run_embedding_forward(kLaunch, out.data(), tok.data(), wte_t.data(),
                                  s.wpe ? wpe_t.data() : nullptr, s.B, s.T, s.C, s.vocab_start,
                                  s.vocab_count);
  expect_close(to_float(out), stored<T>(want), kExact, "out");
}

template <class T>
void check_embedding_backward(const EmbShape& s, uint64_t seed) {
  SCOPED_TRACE(name(s));
  const size_t NC = (size_t)s.B * s.T * s.C;
  const auto tok = tokens(s, seed);
  const auto dout = stored<T>(uniform(NC, seed + 1));
  const auto dwte0 = uniform((size_t)rows(s) * s.C, seed + 2);
  const auto dwpe0 = s.wpe ? uniform((size_t)s.T * s.C, seed + 3) : std::vector<float>{};
  auto want_dwte = dwte0, want_dwpe = dwpe0;
  cr::cpu::embedding_backward(want_dwte.data(), s.wpe ? want_dwpe.data() : nullptr, dout.data(),
                              tok.data(), s.B, s.T, s.C, s.vocab_start, s.vocab_count);

  auto dwte = dwte0, dwpe = dwpe0;
  std::vector<int> scratch(cr::cuda::embedding_backward_scratch_ints(s.B, s.T), -7);
  const auto dout_t = to_storage<T>(dout);
  cr::cuda::run_embedding_backward(kLaunch, dwte.data(), s.wpe ? dwpe.data() : nullptr,
                                   scratch.data(), dout_t.data(), tok.data(), s.B, s.T, s.C,
                                   s.vocab_start, s.vocab_count);
  // Exact in both dtypes: the same f32 additions in the same order as the CPU op.
  expect_close(dwte, want_dwte, kExact, "dwte");
  expect_close(dwpe, want_dwpe, kExact, "dwpe");
}

TEST(EmuEmbedding, ForwardF32) {
  uint64_t seed = 2100;
  for (const auto& s : kEmbShapes) check_embedding_forward<float>(s, seed += 10);
}
TEST(EmuEmbedding, ForwardBf16) {
  uint64_t seed = 2200;
  for (const auto& s : kEmbShapes) check_embedding_forward<bf16>(s, seed += 10);
}
TEST(EmuEmbedding, BackwardF32) {
  uint64_t seed = 2300;
  for (const auto& s : kEmbShapes) check_embedding_backward<float>(s, seed += 10);
}
TEST(EmuEmbedding, BackwardBf16) {
  uint64_t seed = 2400;
  for (const auto& s : kEmbShapes) check_embedding_backward<bf16>(s, seed += 10);
}

}  // namespace
