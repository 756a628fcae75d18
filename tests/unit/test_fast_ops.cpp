// The optimised CPU ops against the simple ones they replaced (core/backend/cpu/reference.h) on
// random shapes, ragged ones included: sizes that are not multiples of the vector width or of the
// kernels' blocks (attention: 64 queries x 256 keys; block_gemm: 4 rows x 16/64 columns), and
// sequences longer than one key block so the online softmax really rescales.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/backend/cpu/block_gemm.h"
#include "core/backend/cpu/ops.h"
#include "core/backend/cpu/reference.h"
#include "core/backend/cpu/vec_math.h"
#include "tests/unit/test_util.h"

namespace cr {
namespace {

using testing::randn;

// max |a - b| / max |b|, over all elements.
double rel_gap(const std::vector<float>& a, const std::vector<float>& b) {
  double gap = 0, ref = 0;
  for (size_t i = 0; i < a.size(); i++) {
    gap = std::max(gap, (double)std::fabs(a[i] - b[i]));
    ref = std::max(ref, (double)std::fabs(b[i]));
  }
  return gap / std::max(ref, 1e-30);
}

TEST(FastOps, ExpApproximation) {
  for (float x = -87.f; x < 88.f; x += 0.01f)
    ASSERT_NEAR(cpu::exp_approx(x), std::exp((double)x), 2e-7 * std::exp((double)x)) << x;
  EXPECT_GE(cpu::exp_approx(-1e4f), 0.f);  // saturates, never NaN
  EXPECT_TRUE(std::isfinite(cpu::exp_approx(1e4f)));
}

TEST(FastOps, BlockGemmMatchesNaive) {
  uint64_t seed = 1;
  for (int M : {1, 3, 4, 7, 64})
    for (int N : {1, 15, 16, 17, 64, 81})
      for (int K : {1, 5, 64}) {
        const int lda = K + 3, ldb = N + 2, ldc = N + 1;  // strided, as inside qkv
        auto A = randn((size_t)M * lda, seed++), B = randn((size_t)K * ldb, seed++);
        auto C = randn((size_t)M * ldc, seed++);
        std::vector<float> want = C;
        for (int i = 0; i < M; i++)
          for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += (double)A[i * lda + k] * B[k * ldb + j];
            want[i * ldc + j] += (float)(0.5 * s);
          }
        cpu::block_gemm(M, N, K, 0.5f, A.data(), lda, B.data(), ldb, C.data(), ldc, true);
        EXPECT_LT(rel_gap(C, want), 1e-6) << M << "x" << N << "x" << K;
        cpu::block_gemm(M, N, K, 1.f, A.data(), lda, B.data(), ldb, C.data(), ldc, false);
        for (int i = 0; i < M; i++)  // overwrite mode leaves the padding columns alone
          for (int j = N; j < ldc; j++) ASSERT_EQ(C[i * ldc + j], want[i * ldc + j]);
      }
}

TEST(FastOps, FlashAttentionMatchesReference) {
  struct Shape { int B, T, C, H; };
  uint64_t seed = 100;
  for (Shape s : {Shape{1, 1, 8, 2}, Shape{2, 5, 12, 3}, Shape{1, 64, 16, 1}, Shape{2, 65, 24, 3},
                  Shape{1, 257, 16, 2}, Shape{1, 300, 20, 1}}) {
    const size_t n3 = (size_t)s.B * s.T * 3 * s.C, n = (size_t)s.B * s.T * s.C;
    auto qkv = randn(n3, seed++, 2.f), dout = randn(n, seed++);
    std::vector<float> out(n), out_ref(n), lse((size_t)s.B * s.H * s.T);
    std::vector<float> att((size_t)s.B * s.H * s.T * s.T), dqkv(n3), dqkv_ref(n3);
    cpu::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.C, s.H);
    cpu::ref::attention_forward(out_ref.data(), att.data(), qkv.data(), s.B, s.T, s.C, s.H);
    EXPECT_LT(rel_gap(out, out_ref), 2e-6) << "T=" << s.T << " C=" << s.C;
    cpu::attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B, s.T,
                            s.C, s.H);
    cpu::ref::attention_backward(dqkv_ref.data(), dout.data(), qkv.data(), att.data(), s.B, s.T,
                                 s.C, s.H);
    EXPECT_LT(rel_gap(dqkv, dqkv_ref), 1e-5) << "T=" << s.T << " C=" << s.C;
  }
}

// Against the std::tanh reference (whose 1 + tanh(u) cancels for u << 0, hence 5e-6) and against
// the formula in double precision (1e-6; 2e-6 for the longer backward expression).
TEST(FastOps, GeluMatchesReference) {
  constexpr double k = 0.7978845608028654, c = 0.044715;
  for (size_t n : {1, 7, 16, 33, 1000, 4099}) {
    auto x = randn(n, n, 3.f), d = randn(n, n + 1);
    std::vector<float> y(n), y_ref(n), dx(n), dx_ref(n), y64(n), dx64(n);
    for (size_t i = 0; i < n; i++) {
      const double xi = x[i], th = std::tanh(k * (xi + c * xi * xi * xi));
      y64[i] = (float)(0.5 * xi * (1 + th));
      dx64[i] = (float)(d[i] * (0.5 * (1 + th) + 0.5 * xi * (1 - th * th) * k * (1 + 3 * c * xi * xi)));
    }
    cpu::gelu_forward(y.data(), x.data(), n);
    cpu::ref::gelu_forward(y_ref.data(), x.data(), n);
    EXPECT_LT(rel_gap(y, y_ref), 5e-6) << n;
    EXPECT_LT(rel_gap(y, y64), 1e-6) << n;
    cpu::gelu_backward(dx.data(), x.data(), d.data(), n);
    cpu::ref::gelu_backward(dx_ref.data(), x.data(), d.data(), n);
    EXPECT_LT(rel_gap(dx, dx_ref), 5e-6) << n;
    EXPECT_LT(rel_gap(dx, dx64), 2e-6) << n;
  }
}

// The fused residual + LayerNorm equals the two ops in sequence, bit for bit.
TEST(FastOps, ResidualLayerNormEqualsTheTwoOps) {
  const int N = 13, C = 37;
  auto a = randn(N * C, 1), b = randn(N * C, 2), w = randn(C, 3), bias = randn(C, 4);
  std::vector<float> x(N * C), y(N * C), m(N), r(N), x2(N * C), y2(N * C), m2(N), r2(N);
  cpu::residual_layernorm_forward(x.data(), y.data(), m.data(), r.data(), a.data(), b.data(),
                                  w.data(), bias.data(), N, C, 1e-5f);
  cpu::residual_forward(x2.data(), a.data(), b.data(), x2.size());
  cpu::layernorm_forward(y2.data(), m2.data(), r2.data(), x2.data(), w.data(), bias.data(), N, C,
                         1e-5f);
  EXPECT_EQ(x, x2);
  EXPECT_EQ(y, y2);
  EXPECT_EQ(m, m2);
  EXPECT_EQ(r, r2);
}

// One pass over segments equals one call per segment, bit for bit, decay applied per segment.
TEST(FastOps, AdamWSegmentsEqualPerTensorSteps) {
  const size_t n = 1000;
  auto p = randn(n, 5), g = randn(n, 6), m = randn(n, 7, 0.1f), v = randn(n, 8, 0.1f);
  for (auto& x : v) x = std::fabs(x);
  auto p2 = p, m2 = m, v2 = v;
  const std::vector<cpu::AdamWSegment> segs = {{0, 333, 0.1f}, {333, 1, 0.f}, {334, 666, 0.1f}};
  cpu::adamw_step_segments(p.data(), g.data(), m.data(), v.data(), segs.data(), segs.size(), 1e-3f,
                           0.9f, 0.95f, 1e-8f, 3);
  for (const auto& s : segs)
    cpu::adamw_step(p2.data() + s.offset, g.data() + s.offset, m2.data() + s.offset,
                    v2.data() + s.offset, s.n, 1e-3f, 0.9f, 0.95f, 1e-8f, s.weight_decay, 3);
  EXPECT_EQ(p, p2);
  EXPECT_EQ(m, m2);
  EXPECT_EQ(v, v2);
}

}  // namespace
}  // namespace cr
