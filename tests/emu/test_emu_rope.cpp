// The rotary-embedding kernel of core/backend/cuda/rope.cuh, run under the CUDA emulator against
// cr::cpu::rope_forward / rope_backward: ragged shapes (pair counts not a multiple of the block,
// odd half head sizes), rows wider than the rotated heads (ld > n_heads * hs: the rest of each row
// must stay untouched), positions starting past 0 (up to 1e5, where an angle recipe that differs
// from the CPU's fp32 one would show), f32 and bf16 storage.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "core/backend/cpu/ops.h"
#include "core/backend/cuda/rope.cuh"
#include "core/tensor/bf16.h"
#include "tests/emu/emu_test_util.h"

namespace {

using namespace cr::emu_test;
using cr::cuda::bf16;

// ---- tolerances (|got - want| <= rel * |want| + abs) -------------------------------------------
// f32: only cosf/sinf (<= 2 ulp) differ from the CPU's correctly rounded cos/sin of the same
// float angle. bf16: the CPU op on the bf16-rounded input, then one rounding of the result.
constexpr Tol kF32{2e-6f, 1e-6f}, kBf16{1e-2f, 1e-5f};

struct Shape {
  int B, T, ld, n_heads, hs, pos0;
  float theta;
};
std::string name(const Shape& s) {
  return fmt::format("B{} T{} ld{} heads{} hs{} pos0 {}", s.B, s.T, s.ld, s.n_heads, s.hs, s.pos0);
}

const Shape kShapes[] = {
    {2, 5, 37, 3, 10, 7, 10000.f},        // half = 5, 150 pairs (block 256), 7 padding columns
    {1, 9, 200, 4, 48, 1000, 10000.f},    // 864 pairs: 4 blocks, ragged last block
    {3, 2, 64, 2, 32, 100000, 500000.f},  // angles ~1e5 rad, Llama-3 theta
    {1, 3, 8, 1, 2, 0, 10000.f},          // hs 2: a single pair per head
};

// Rotates the same (stored) input with the kernel and the CPU op; compares every element of the
// buffer, so the untouched columns past n_heads * hs are checked too.
template <class Tp>
void check(const Shape& s, bool backward, uint64_t seed) {
  SCOPED_TRACE(name(s) + (backward ? " backward" : " forward"));
  const size_t n = (size_t)s.B * s.T * s.ld;
  std::vector<float> want = stored<Tp>(uniform(n, seed));
  std::vector<Tp> x = to_storage<Tp>(want);
  (backward ? cr::cpu::rope_backward : cr::cpu::rope_forward)(want.data(), s.B, s.T, s.ld,
                                                              s.n_heads, s.hs, s.theta, s.pos0);
  cr::cuda::run_rope(kLaunch, x.data(), s.B, s.T, s.ld, s.n_heads, s.hs, s.theta, s.pos0,
                     backward ? -1.f : 1.f);
  expect_close(to_float(x), want, std::is_same_v<Tp, float> ? kF32 : kBf16, "x");
}

TEST(EmuRope, ForwardF32) {
  uint64_t seed = 1;
  for (const Shape& s : kShapes) check<float>(s, false, seed++);
}
TEST(EmuRope, BackwardF32) {
  uint64_t seed = 11;
  for (const Shape& s : kShapes) check<float>(s, true, seed++);
}
TEST(EmuRope, ForwardBf16) {
  uint64_t seed = 21;
  for (const Shape& s : kShapes) check<bf16>(s, false, seed++);
}
TEST(EmuRope, BackwardBf16) {
  uint64_t seed = 31;
  for (const Shape& s : kShapes) check<bf16>(s, true, seed++);
}

// The host half of the recipe: the table the kernel receives is the CPU's inv_freq, bit for bit.
TEST(EmuRope, FrequenciesMatchCpuRecipe) {
  const int hs = 128;
  const cr::cuda::RopeFreqs f = cr::cuda::rope_freqs(hs, 10000.f);
  for (int i = 0; i < hs / 2; i++) {
    const float want = 1.f / (float)std::pow(10000.0, (double)((float)(2 * i) / (float)hs));
    EXPECT_EQ(f.inv_freq[i], want) << i;
  }
}

}  // namespace
