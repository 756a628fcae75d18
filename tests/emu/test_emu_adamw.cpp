// The optimizer kernels of core/backend/cuda/adamw.cuh, run under the CUDA emulator against
// cr::cpu::adamw_step_segments and cr::cpu::sum_squares. AdamW: several segments of ragged
// lengths (1, block-sized, odd), listed out of offset order, one empty, gaps between them that
// must stay untouched, different weight decays, a few consecutive steps. sum_squares: 0, 1, 257 and
// 100003 elements (25 blocks, each thread striding over ~16 elements), the same bits on a second
// run, and the grid size rule (capped at kSumSqMaxBlocks; too slow to emulate at the cap).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/backend/cpu/ops.h"
#include "core/backend/cuda/adamw.cuh"
#include "tests/emu/emu_test_util.h"

namespace {

using namespace cr::emu_test;

// ---- tolerances (|got - want| <= rel * |want| + abs) -------------------------------------------
// AdamW: the same float expressions as the CPU op; only operation fusing differs (an FMA in the
// CPU's AVX2/AVX-512 clones or in nvcc's code), a rounding or two per term, which the cancellation
// in m = beta1 m + (1 - beta1) g magnifies near m = 0: hence the absolute part (m, v, params here
// are 1e-4 .. 1).
constexpr Tol<double> kAdamW{2e-6, 2e-8};
// sum_squares: both sides sum in double, in different orders.
constexpr Tol<double> kSumSq{1e-12, 0.0};

// Out of offset order on purpose; [3048, 3100) and [5000, 5050) belong to no segment.
const cr::cpu::AdamWSegment kSegments[] = {
    {1001, 2047, 0.1f},  // two blocks of 1024 minus one element
    {0, 1000, 0.1f},
    {1000, 1, 0.f},      // a single element (a scalar parameter)
    {3877, 0, 0.1f},     // empty: no blocks
    {3100, 777, 0.05f},
    {3877, 1123, 0.f},
};
constexpr size_t kTotal = 5050;

TEST(EmuAdamW, SegmentsOverSteps) {
  const float lr = 3e-3f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  const size_t nsegs = std::size(kSegments);
  std::vector<float> p = normal(kTotal, 1, 0.5), m(kTotal, 0.f), v(kTotal, 0.f);
  std::vector<float> p_ref = p, m_ref = m, v_ref = v;
  for (int step = 1; step <= 3; step++) {
    SCOPED_TRACE("step " + std::to_string(step));
    // Gradients of mixed scale, with exact zeros (v stays 0 there: eps keeps the step finite).
    std::vector<float> g = normal(kTotal, 100 + step, step == 2 ? 1e-3 : 1.0);
    for (size_t i = 0; i < kTotal; i += 97) g[i] = 0.f;
    cr::cpu::adamw_step_segments(p_ref.data(), g.data(), m_ref.data(), v_ref.data(), kSegments,
                                 nsegs, lr, beta1, beta2, eps, step);
    std::vector<cr::cuda::AdamWPlanEntry> plan;
    const unsigned long long blocks = cr::cuda::adamw_plan(plan, kSegments, nsegs, lr);
    ASSERT_EQ(plan.size(), nsegs - 1);  // the empty segment is dropped
    ASSERT_EQ(blocks, 2u + 1u + 1u + 1u + 2u);
    cr::cuda::run_adamw(kLaunch, p.data(), g.data(), m.data(), v.data(), plan.data(),
                        (int)plan.size(), (unsigned)blocks, lr, beta1, beta2, eps, step);
    expect_close(p, p_ref, kAdamW, "params");
    expect_close(m, m_ref, kAdamW, "m");
    expect_close(v, v_ref, kAdamW, "v");
  }
}

TEST(EmuAdamW, NoSegmentsLaunchesNothing) {
  std::vector<cr::cuda::AdamWPlanEntry> plan;
  EXPECT_EQ(cr::cuda::adamw_plan(plan, kSegments, 0, 1e-3f), 0u);
  cr::cuda::run_adamw(kLaunch, nullptr, nullptr, nullptr, nullptr, plan.data(), 0, 0, 1e-3f, 0.9f,
                      0.95f, 1e-8f, 1);
}

double run_sum_squares(const std::vector<float>& x) {
  std::vector<double> buf(1 + cr::cuda::sum_squares_blocks(x.size()), NAN);
  cr::cuda::run_sum_squares(kLaunch, buf.data(), buf.data() + 1, x.data(), x.size());
  return buf[0];
}

TEST(EmuSumSquares, MatchesCpuAndRepeats) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{257}, size_t{100003}}) {
    SCOPED_TRACE("n " + std::to_string(n));
    const std::vector<float> x = normal(n, 7 + n, 2.0);
    const double want = cr::cpu::sum_squares(x.data(), n);
    const double got = run_sum_squares(x);
    EXPECT_LE(std::fabs(got - want), kSumSq.rel * want + kSumSq.abs) << got << " vs " << want;
    if (n == 100003) {
      EXPECT_EQ(run_sum_squares(x), got) << "not deterministic";
    }
  }
}

TEST(EmuSumSquares, GridSize) {
  using cr::cuda::sum_squares_blocks;
  EXPECT_EQ(sum_squares_blocks(0), 1);  // one block still writes the (zero) partial
  EXPECT_EQ(sum_squares_blocks(4096), 1);
  EXPECT_EQ(sum_squares_blocks(4097), 2);
  EXPECT_EQ(sum_squares_blocks(100003), 25);
  EXPECT_EQ(sum_squares_blocks((size_t)1 << 40), cr::cuda::kSumSqMaxBlocks);
}

}  // namespace
