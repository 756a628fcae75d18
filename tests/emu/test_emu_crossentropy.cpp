// The vocabulary-parallel cross-entropy kernels of core/backend/cuda/crossentropy.cuh, run under
// the CUDA emulator against cr::cpu::crossentropy_row_max / _row_sums / _backward: ragged shards
// (Vl not a multiple of the 256-thread block, padding columns past n_valid holding large logits
// that must be ignored, a shard with no real column), v0 != 0 as on a vocabulary-parallel rank,
// targets inside the shard, in its padding and outside it, negative targets (not counted: zero
// gradient row), dlogits aliasing logits, f32 and bf16 logits. Outputs are poisoned with NaN
// first, so an element a kernel forgets fails.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "core/backend/cpu/ops.h"
#include "core/backend/cuda/crossentropy.cuh"
#include "core/common/rng.h"
#include "core/tensor/bf16.h"
#include "tests/emu/emu_test_util.h"

namespace {

using namespace cr::emu_test;
using cr::cuda::bf16;

// ---- tolerances (|got - want| <= rel * |want| + abs; equal values, infinities included, pass) ---
constexpr Tol kExact{0.f, 0.f};      // row_max and the target logit: selections, no arithmetic
constexpr Tol kSums{1e-5f, 0.f};     // float tree sum vs the CPU's double sum of exp
constexpr Tol kGradF32{1e-5f, 1e-9f};  // expf (<= 2 ulp) vs the CPU's exp_approx (<= 2 ulp)
constexpr Tol kGradBf16{1e-2f, 1e-7f};  // plus one bf16 rounding of the result

struct Shape {
  int N, Vl, n_valid, v0;
};
std::string name(const Shape& s) {
  return fmt::format("N{} Vl{} n_valid{} v0 {}", s.N, s.Vl, s.n_valid, s.v0);
}

const Shape kShapes[] = {
    {37, 1000, 997, 2000},  // a middle shard of a padded vocabulary
    {5, 300, 300, 0},       // the first shard, no padding
    {3, 64, 0, 1000},       // a shard of padding only: row_max -inf, sums 0, gradient 0
    {4, 33, 1, 40},         // one real column
};

// Logits of moderate spread; padding columns get 50, which would dominate max and sums if read.
std::vector<float> random_logits(const Shape& s, uint64_t seed) {
  cr::Rng rng(seed);
  std::vector<float> l((size_t)s.N * s.Vl);
  for (int n = 0; n < s.N; n++)
    for (int i = 0; i < s.Vl; i++)
      l[(size_t)n * s.Vl + i] = i < s.n_valid ? (float)(rng.normal() * 3.0) : 50.f;
  return l;
}

// Targets across [v0 - Vl, v0 + 2 Vl) (negative ones, not counted, where v0 < Vl), plus the edge
// cases of the shard in the first rows: its first column, its last real column, its first
// padding column, the column just before it, and the ignore index -1.
std::vector<int32_t> random_targets(const Shape& s, uint64_t seed) {
  cr::Rng rng(seed);
  std::vector<int32_t> y(s.N);
  for (auto& t : y) t = s.v0 - s.Vl + (int32_t)rng.below(3 * (uint64_t)s.Vl);
  const int32_t edges[] = {s.v0, s.v0 + s.n_valid - 1, s.v0 + s.n_valid, s.v0 - 1, -1};
  for (int k = 0; k < 5 && k < s.N; k++) y[k] = edges[k];
  return y;
}

// The CPU's three pieces on the stored logits; each kernel is then fed the CPU's inputs, so each
// comparison covers one kernel only.
struct Reference {
  std::vector<float> row_max, sums, dlogits;
};
Reference reference(const Shape& s, const std::vector<float>& l, const std::vector<int32_t>& y,
                    float dloss) {
  Reference r{std::vector<float>(s.N), std::vector<float>(2 * (size_t)s.N), l};
  cr::cpu::crossentropy_row_max(r.row_max.data(), l.data(), s.N, s.Vl, s.n_valid);
  cr::cpu::crossentropy_row_sums(r.sums.data(), l.data(), r.row_max.data(), y.data(), s.N, s.Vl,
                                 s.v0, s.n_valid);
  // dlogits for rows whose sums are 0 (no real column) are 0 everywhere; the CPU op would divide
  // by 0 only for columns it never visits, so this is well defined.
  cr::cpu::crossentropy_backward(r.dlogits.data(), l.data(), r.row_max.data(), r.sums.data(),
                                 y.data(), s.N, s.Vl, s.v0, s.n_valid, dloss);
  return r;
}

template <class Tp>
void check(const Shape& s, uint64_t seed, bool alias) {
  SCOPED_TRACE(name(s) + (alias ? " dlogits aliasing logits" : ""));
  const bool f32 = std::is_same_v<Tp, float>;
  const std::vector<float> l = stored<Tp>(random_logits(s, seed));
  const std::vector<int32_t> y = random_targets(s, seed + 1);
  const float dloss = 1.f / (float)s.N;
  const Reference want = reference(s, l, y, dloss);
  std::vector<Tp> logits = to_storage<Tp>(l);

  std::vector<float> row_max(s.N, NAN);
  cr::cuda::run_crossentropy_row_max(kLaunch, row_max.data(), logits.data(), s.N, s.Vl, s.n_valid);
  expect_close(row_max, want.row_max, kExact, "row_max");

  std::vector<float> sums(2 * (size_t)s.N, NAN);
  cr::cuda::run_crossentropy_row_sums(kLaunch, sums.data(), logits.data(), want.row_max.data(),
                                      y.data(), s.N, s.Vl, s.v0, s.n_valid);
  expect_close(std::vector<float>(sums.begin(), sums.begin() + s.N),
               std::vector<float>(want.sums.begin(), want.sums.begin() + s.N), kSums, "sums");
  expect_close(std::vector<float>(sums.begin() + s.N, sums.end()),
               std::vector<float>(want.sums.begin() + s.N, want.sums.end()), kExact,
               "target logits");

  std::vector<Tp> dbuf = poisoned<Tp>(l.size());
  Tp* d = alias ? logits.data() : dbuf.data();
  cr::cuda::run_crossentropy_backward(kLaunch, d, logits.data(), want.row_max.data(),
                                      want.sums.data(), y.data(), s.N, s.Vl, s.v0, s.n_valid,
                                      dloss);
  expect_close(to_float(alias ? logits : dbuf), want.dlogits, f32 ? kGradF32 : kGradBf16,
               "dlogits");
}

TEST(EmuCrossEntropy, F32) {
  uint64_t seed = 1;
  for (const Shape& s : kShapes) check<float>(s, seed += 10, false);
}
TEST(EmuCrossEntropy, Bf16) {
  uint64_t seed = 101;
  for (const Shape& s : kShapes) check<bf16>(s, seed += 10, false);
}
// A negative target (the ignore index; -100 is PyTorch's default; INT32_MIN must not overflow
// target - v0 into the shard) gets target logit 0 and an all-zero gradient row, in place too;
// the same rows with counted targets are not zero (the negative control).
TEST(EmuCrossEntropy, IgnoredTargetsGetZeroGradient) {
  const Shape s{6, 300, 297, 0};
  const std::vector<int32_t> ignored = {-1, 5, -100, std::numeric_limits<int32_t>::min(), 296, -2};
  for (bool in_place : {false, true}) {
    SCOPED_TRACE(in_place ? "in place" : "separate dlogits");
    const std::vector<float> l = random_logits(s, 301);
    std::vector<float> logits = l, row_max(s.N), sums(2 * (size_t)s.N, NAN);
    cr::cuda::run_crossentropy_row_max(kLaunch, row_max.data(), logits.data(), s.N, s.Vl,
                                       s.n_valid);
    cr::cuda::run_crossentropy_row_sums(kLaunch, sums.data(), logits.data(), row_max.data(),
                                        ignored.data(), s.N, s.Vl, s.v0, s.n_valid);
    for (int n = 0; n < s.N; n++) {
      if (ignored[n] < 0) {
        EXPECT_EQ(sums[s.N + n], 0.f) << "target logit of row " << n;
      }
    }
    std::vector<float> dbuf(l.size(), NAN);
    float* d = in_place ? logits.data() : dbuf.data();
    cr::cuda::run_crossentropy_backward(kLaunch, d, logits.data(), row_max.data(), sums.data(),
                                        ignored.data(), s.N, s.Vl, s.v0, s.n_valid, 0.25f);
    for (int n = 0; n < s.N; n++) {
      size_t nonzero = 0;
      for (int i = 0; i < s.Vl; i++) nonzero += d[(size_t)n * s.Vl + i] != 0.f;
      if (ignored[n] < 0)
        EXPECT_EQ(nonzero, 0u) << "row " << n << " (target " << ignored[n] << ")";
      else
        EXPECT_EQ(nonzero, (size_t)s.n_valid) << "row " << n;  // softmax > 0 on every real column
    }
  }
}

TEST(EmuCrossEntropy, InPlaceGradient) {
  const Shape s{6, 1000, 997, 2000};  // few rows: the emulator's time goes with blocks
  check<float>(s, 201, true);
  check<bf16>(s, 202, true);
}

}  // namespace
