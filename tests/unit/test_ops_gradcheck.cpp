// Finite-difference gradient checks of every CPU op. Each op's backward is checked against the
// central difference of L = sum(out * R) for a fixed random R (dout = R). Shapes are small but
// reach every branch (several heads, causal rows of every length, a padded vocabulary).
// Tolerance: fp32 central differences with h = 1e-2 are good to ~1e-3; a transposed weight or
// a missing term is off by O(1).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/backend/cpu/ops.h"
#include "core/backend/cpu/reference.h"
#include "tests/unit/test_util.h"

namespace cr {
namespace {

using testing::randn;

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); i++) s += (double)a[i] * b[i];
  return s;
}

// Compares analytic[i] with (L(x+h) - L(x-h)) / 2h for the elements i of x in `at` (all of
// them when `at` is empty; a sample keeps long sequences affordable).
void expect_grad_at(const char* what, std::vector<float>& x, const std::vector<float>& analytic,
                    const std::function<double()>& loss, const std::vector<size_t>& at,
                    float h = 1e-2f) {
  ASSERT_EQ(x.size(), analytic.size());
  double max_err = 0, max_ref = 0;
  for (size_t k = 0; k < (at.empty() ? x.size() : at.size()); k++) {
    const size_t i = at.empty() ? k : at[k];
    const float orig = x[i];
    x[i] = orig + h;
    const double lp = loss();
    x[i] = orig - h;
    const double lm = loss();
    x[i] = orig;
    const double fd = (lp - lm) / (2.0 * h);
    max_err = std::max(max_err, std::fabs(fd - analytic[i]));
    max_ref = std::max(max_ref, std::fabs(fd));
  }
  EXPECT_GT(max_ref, 1e-3) << what << ": gradient is trivially zero; the check proves nothing";
  EXPECT_LT(max_err, 2e-3 + 5e-3 * max_ref) << what << ": max |fd - analytic| = " << max_err
                                            << " (max |fd| = " << max_ref << ")";
  // The margin, for --gtest_output=xml (how close a check runs to its tolerance).
  ::testing::Test::RecordProperty(std::string(what) + "_max_err",
                                  testing::sci(max_err) + " of max|fd| " + testing::sci(max_ref));
}

// Every element of x.
void expect_grad(const char* what, std::vector<float>& x, const std::vector<float>& analytic,
                 const std::function<double()>& loss, float h = 1e-2f) {
  expect_grad_at(what, x, analytic, loss, {}, h);
}

TEST(GradCheck, Embedding) {
  const int B = 2, T = 5, C = 6, V = 7;
  std::vector<int32_t> tok = {0, 3, 3, 6, 1, 2, 3, 0, 5, 3};  // repeats: accumulation matters
  auto wte = randn(V * C, 1), wpe = randn(T * C, 2), R = randn(B * T * C, 3);
  std::vector<float> out(B * T * C);
  auto loss = [&] {
    cpu::embedding_forward(out.data(), tok.data(), wte.data(), wpe.data(), B, T, C);
    return dot(out, R);
  };
  std::vector<float> dwte(V * C, 0.f), dwpe(T * C, 0.f);
  cpu::embedding_backward(dwte.data(), dwpe.data(), R.data(), tok.data(), B, T, C);
  expect_grad("wte", wte, dwte, loss);
  expect_grad("wpe", wpe, dwpe, loss);
}

TEST(GradCheck, LayerNorm) {
  const int N = 5, C = 37;  // C not a multiple of the channel block: tail path
  auto x = randn(N * C, 4, 2.f), w = randn(C, 5), b = randn(C, 6), R = randn(N * C, 7);
  for (int i = 0; i < N * C; i++) x[i] += 3.f;  // non-zero mean
  std::vector<float> out(N * C), mean(N), rstd(N);
  auto loss = [&] {
    cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N,
                           C, 1e-5f);
    return dot(out, R);
  };
  loss();
  std::vector<float> dx(N * C, 0.f), dw(C, 0.f), db(C, 0.f);
  cpu::layernorm_backward(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(),
                          mean.data(), rstd.data(), N, C);
  expect_grad("inp", x, dx, loss);
  expect_grad("weight", w, dw, loss);
  expect_grad("bias", b, db, loss);
}

TEST(GradCheck, Matmul) {
  const int N = 6, C = 5, OC = 70;  // OC spans two bias blocks
  auto x = randn(N * C, 8), w = randn(OC * C, 9), b = randn(OC, 10), R = randn(N * OC, 11);
  std::vector<float> out(N * OC);
  auto loss = [&] {
    cpu::matmul_forward(out.data(), x.data(), w.data(), b.data(), N, C, OC);
    return dot(out, R);
  };
  std::vector<float> dx(N * C), dw(OC * C, 0.f), db(OC, 0.f);
  cpu::matmul_backward(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(), N, C, OC);
  expect_grad("inp", x, dx, loss);
  expect_grad("weight", w, dw, loss);
  expect_grad("bias", b, db, loss);
}

TEST(GradCheck, MatmulAccumulatesParameterGradients) {
  const int N = 3, C = 4, OC = 2;
  auto x = randn(N * C, 12), w = randn(OC * C, 13), R = randn(N * OC, 14);
  std::vector<float> dw1(OC * C, 0.f), dw2(OC * C, 0.f);
  cpu::matmul_backward(nullptr, dw1.data(), nullptr, R.data(), x.data(), w.data(), N, C, OC);
  cpu::matmul_backward(nullptr, dw2.data(), nullptr, R.data(), x.data(), w.data(), N, C, OC);
  cpu::matmul_backward(nullptr, dw2.data(), nullptr, R.data(), x.data(), w.data(), N, C, OC);
  for (int i = 0; i < OC * C; i++) EXPECT_FLOAT_EQ(dw2[i], 2 * dw1[i]);
}

TEST(GradCheck, AttentionReference) {
  const int B = 2, T = 5, C = 12, H = 3;
  auto qkv = randn(B * T * 3 * C, 15), R = randn(B * T * C, 16);
  std::vector<float> out(B * T * C), att(B * H * T * T);
  auto loss = [&] {
    cpu::ref::attention_forward(out.data(), att.data(), qkv.data(), B, T, C, H);
    return dot(out, R);
  };
  loss();
  // Causality: probabilities above the diagonal are exactly zero, rows sum to one.
  for (int bh = 0; bh < B * H; bh++)
    for (int t = 0; t < T; t++) {
      double s = 0;
      for (int u = 0; u < T; u++) {
        const float p = att[(bh * T + t) * T + u];
        if (u > t) {
          EXPECT_EQ(p, 0.f);
        }
        s += p;
      }
      EXPECT_NEAR(s, 1.0, 1e-6);
    }
  std::vector<float> dqkv(B * T * 3 * C);
  cpu::ref::attention_backward(dqkv.data(), R.data(), qkv.data(), att.data(), B, T, C, H);
  expect_grad("qkv", qkv, dqkv, loss);
}

// The flash-style attention, on a shape with a partial query block (T = 70 > kQ = 64).
TEST(GradCheck, Attention) {
  const int B = 1, T = 70, C = 6, H = 2;
  auto qkv = randn(B * T * 3 * C, 25), R = randn(B * T * C, 26);
  std::vector<float> out(B * T * C), lse(B * H * T);
  auto loss = [&] {
    cpu::attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, H);
    return dot(out, R);
  };
  loss();
  std::vector<float> dqkv(B * T * 3 * C);
  cpu::attention_backward(dqkv.data(), R.data(), qkv.data(), out.data(), lse.data(), B, T, C, H);
  expect_grad("qkv", qkv, dqkv, loss);
}

// RMSNorm, ragged C (not a multiple of the 32-channel dweight block). rmsnorm_backward
// ACCUMULATES into dinp and dweight (the residual stream's gradient and a parameter gradient),
// so both start from non-zero values here and the check subtracts them.
TEST(GradCheck, RMSNormAccumulatesIntoDinpAndDweight) {
  for (int C : {37, 3}) {  // a small C makes the mean(dnorm * norm) term large
    const int N = 6;
    auto x = randn(N * C, 30 + C, 2.f), w = randn(C, 31 + C), R = randn(N * C, 32 + C);
    for (int i = 0; i < N * C; i++) x[i] += 1.f;  // RMSNorm does not centre: a mean must not matter
    std::vector<float> out(N * C), rstd(N);
    auto loss = [&] {
      cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f);
      return dot(out, R);
    };
    loss();
    const auto dx0 = randn(N * C, 33), dw0 = randn(C, 34);
    std::vector<float> dx = dx0, dw = dw0;
    cpu::rmsnorm_backward(dx.data(), dw.data(), R.data(), x.data(), w.data(), rstd.data(), N, C);
    std::vector<float> gx(N * C), gw(C);
    for (int i = 0; i < N * C; i++) gx[i] = dx[i] - dx0[i];
    for (int c = 0; c < C; c++) gw[c] = dw[c] - dw0[c];
    const std::string tag = " C=" + std::to_string(C);
    expect_grad(("rmsnorm inp" + tag).c_str(), x, gx, loss);
    expect_grad(("rmsnorm weight" + tag).c_str(), w, gw, loss);
    // A second call adds the same gradient again.
    cpu::rmsnorm_backward(dx.data(), dw.data(), R.data(), x.data(), w.data(), rstd.data(), N, C);
    for (int i = 0; i < N * C; i++)
      EXPECT_NEAR(dx[i] - dx0[i], 2 * gx[i], 1e-5f * (1 + std::fabs(gx[i])));
    for (int c = 0; c < C; c++)
      EXPECT_NEAR(dw[c] - dw0[c], 2 * gw[c], 1e-5f * (1 + std::fabs(gw[c])));
  }
}

// RoPE on rows wider than its heads (ld > n_heads * hs: the channels after the heads, the K/V
// of a fused qkv row, say, must be left alone), several heads, two sequences, pos0 > 0.
struct RopeShape {
  int B, T, ld, n_heads, hs, pos0;
  float theta;
};

TEST(GradCheck, RoPE) {
  for (RopeShape s :
       {RopeShape{2, 5, 29, 3, 6, 7, 100.f}, RopeShape{1, 4, 10, 1, 10, 1, 10000.f}}) {
    const size_t n = (size_t)s.B * s.T * s.ld;
    auto x = randn(n, 40 + s.hs), R = randn(n, 41 + s.hs);
    std::vector<float> y(n);
    auto loss = [&] {
      y = x;
      cpu::rope_forward(y.data(), s.B, s.T, s.ld, s.n_heads, s.hs, s.theta, s.pos0);
      return dot(y, R);
    };
    loss();
    for (int r = 0; r < s.B * s.T; r++)  // untouched channels are bit-identical
      for (int c = s.n_heads * s.hs; c < s.ld; c++) ASSERT_EQ(y[r * s.ld + c], x[r * s.ld + c]);
    std::vector<float> dx = R;
    cpu::rope_backward(dx.data(), s.B, s.T, s.ld, s.n_heads, s.hs, s.theta, s.pos0);
    expect_grad("rope x", x, dx, loss);
  }
}

// rope_backward is the adjoint (the transpose) of rope_forward: <rope(x), y> = <x, rope^T(y)>.
// A rotation's transpose is its inverse, so rope_backward(rope_forward(x)) = x as well. A wrong
// sign of sin, a swapped pair or a position off by one breaks both by O(1).
TEST(GradCheck, RoPEBackwardIsTheAdjoint) {
  for (RopeShape s : {RopeShape{2, 37, 47, 4, 10, 1000, 10000.f},
                      RopeShape{3, 9, 30, 2, 14, 3, 500000.f}, RopeShape{1, 5, 2, 1, 2, 0, 10.f}}) {
    const size_t n = (size_t)s.B * s.T * s.ld;
    auto x = randn(n, 50 + s.ld), y = randn(n, 51 + s.ld);
    auto rx = x, ry = y;
    cpu::rope_forward(rx.data(), s.B, s.T, s.ld, s.n_heads, s.hs, s.theta, s.pos0);
    cpu::rope_backward(ry.data(), s.B, s.T, s.ld, s.n_heads, s.hs, s.theta, s.pos0);
    double lhs = 0, rhs = 0, mag = 0;
    for (size_t i = 0; i < n; i++) {
      lhs += (double)rx[i] * y[i];
      rhs += (double)x[i] * ry[i];
      mag += std::fabs((double)x[i] * y[i]);
    }
    EXPECT_LT(std::fabs(lhs - rhs), 1e-6 * mag)
        << "ld=" << s.ld << " lhs " << lhs << " rhs " << rhs;
    RecordProperty("adjoint_gap_ld" + std::to_string(s.ld),
                   testing::sci(std::fabs(lhs - rhs) / mag));
    cpu::rope_backward(rx.data(), s.B, s.T, s.ld, s.n_heads, s.hs, s.theta, s.pos0);
    double gap = 0;
    for (size_t i = 0; i < n; i++) gap = std::max(gap, (double)std::fabs(rx[i] - x[i]));
    EXPECT_LT(gap, 2e-6) << "rope_backward(rope_forward(x)) != x, ld=" << s.ld;
    RecordProperty("inverse_gap_ld" + std::to_string(s.ld), testing::sci(gap));
  }
}

// SwiGLU: both halves of each [gate | up] row; a gate range wide enough to reach the sigmoid's
// saturation. dinp is overwritten: it starts as garbage.
TEST(GradCheck, SwiGLU) {
  const int N = 5, F = 37;
  auto x = randn(N * 2 * F, 60, 3.f), R = randn(N * F, 61);
  std::vector<float> out(N * F);
  auto loss = [&] {
    cpu::swiglu_forward(out.data(), x.data(), N, F);
    return dot(out, R);
  };
  std::vector<float> dx(N * 2 * F, 1e3f);
  cpu::swiglu_backward(dx.data(), x.data(), R.data(), N, F);
  std::vector<size_t> gate, up;
  for (int n = 0; n < N; n++)
    for (int i = 0; i < F; i++) {
      gate.push_back((size_t)n * 2 * F + i);
      up.push_back((size_t)n * 2 * F + F + i);
    }
  expect_grad_at("swiglu gate", x, dx, loss, gate);
  expect_grad_at("swiglu up", x, dx, loss, up);
}

// Grouped-query flash attention (H query heads sharing Hkv kv heads) against finite differences:
// every qkv element for a short sequence; for the others a sample of rows (both sequences of a
// batch; rows either side of the 64-query and 256-key block edges), every channel of a row or,
// for the long sequences, one channel of every q, k and v head of it (each finite difference
// reruns the whole forward).
struct GqaShape {
  int B, T, H, Hkv, hs;
};

// OpenMP at one thread for the scope: finite differences call the op thousands of times on tiny
// shapes, where waking the thread pool (slow on a loaded machine) would cost more than the math.
// Thread invariance is test_thread_invariance.cpp's subject.
class OneThread {
 public:
  OneThread() : saved_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~OneThread() { omp_set_num_threads(saved_); }

 private:
  int saved_;
};

TEST(GradCheck, GroupedQueryAttention) {
  OneThread one_thread;
  for (GqaShape s : {GqaShape{1, 37, 4, 1, 4}, GqaShape{2, 37, 4, 2, 4}, GqaShape{1, 300, 4, 2, 4},
                     GqaShape{1, 300, 4, 1, 4}}) {
    const int ld = (s.H + 2 * s.Hkv) * s.hs, C = s.H * s.hs;
    const size_t nq = (size_t)s.B * s.T * ld, no = (size_t)s.B * s.T * C;
    auto qkv = randn(nq, 70 + s.T + s.Hkv), R = randn(no, 71 + s.T + s.Hkv);
    std::vector<float> out(no), lse((size_t)s.B * s.H * s.T);
    auto loss = [&] {
      cpu::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.H, s.Hkv, s.hs);
      return dot(out, R);
    };
    loss();
    std::vector<float> dqkv(nq);
    cpu::attention_backward(dqkv.data(), R.data(), qkv.data(), out.data(), lse.data(), s.B, s.T,
                            s.H, s.Hkv, s.hs);
    std::vector<size_t> at;  // empty: every element
    if (s.B > 1)
      for (int b = 0; b < s.B; b++)
        for (int t : {0, 1, 18, s.T - 1})
          for (int c = 0; c < ld; c++) at.push_back(((size_t)b * s.T + t) * ld + c);
    if (s.T > 64)
      for (int t : {0, 1, 63, 64, 255, 256, s.T - 1})
        for (int head = 0; head < s.H + 2 * s.Hkv; head++)
          at.push_back((size_t)t * ld + head * s.hs + (t + head) % s.hs);
    const std::string what = "gqa qkv B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) +
                             " Hkv=" + std::to_string(s.Hkv);
    expect_grad_at(what.c_str(), qkv, dqkv, loss, at);
  }
}

TEST(GradCheck, Gelu) {
  const size_t n = 40;
  auto x = randn(n, 17, 2.f), R = randn(n, 18);
  std::vector<float> out(n);
  auto loss = [&] {
    cpu::gelu_forward(out.data(), x.data(), n);
    return dot(out, R);
  };
  std::vector<float> dx(n);
  cpu::gelu_backward(dx.data(), x.data(), R.data(), n);
  expect_grad("inp", x, dx, loss, 1e-3f);
  // Known values of the tanh approximation.
  float v[3] = {0.f, 1.f, -1.f}, o[3];
  cpu::gelu_forward(o, v, 3);
  EXPECT_FLOAT_EQ(o[0], 0.f);
  EXPECT_NEAR(o[1], 0.841192f, 1e-5);
  EXPECT_NEAR(o[2], -0.158808f, 1e-5);
}

TEST(GradCheck, SoftmaxCrossEntropyWithPaddedVocabulary) {
  const int N = 4, V = 7, Vp = 10;
  auto logits = randn(N * Vp, 19, 2.f);
  for (int n = 0; n < N; n++)
    for (int i = V; i < Vp; i++) logits[n * Vp + i] = 50.f;  // padding must be ignored
  std::vector<int32_t> y = {0, 6, 3, 3};
  std::vector<float> losses(N);
  auto loss = [&] {
    cpu::crossentropy_forward_backward(losses.data(), nullptr, logits.data(), y.data(), N, V, Vp,
                                       0.f);
    double s = 0;
    for (float l : losses) s += l;
    return s;
  };
  const double l0 = loss();
  // Closed form for row 0.
  double z = 0;
  for (int i = 0; i < V; i++) z += std::exp((double)logits[i]);
  EXPECT_NEAR(losses[0], std::log(z) - logits[0], 1e-5);
  EXPECT_LT(l0 / N, 20.0);  // a leaked padding logit of 50 would dominate
  std::vector<float> d(N * Vp);
  cpu::crossentropy_forward_backward(losses.data(), d.data(), logits.data(), y.data(), N, V, Vp,
                                     1.f);
  for (int n = 0; n < N; n++)
    for (int i = V; i < Vp; i++) EXPECT_EQ(d[n * Vp + i], 0.f);
  expect_grad("logits", logits, d, loss);
}

TEST(Ops, AdamWMatchesClosedFormFirstStep) {
  // Step 1: m = (1-b1) g, v = (1-b2) g^2, so the update is lr * g / (|g| + eps') = lr * sign(g).
  float p[2] = {1.f, -2.f}, g[2] = {0.5f, -0.25f}, m[2] = {}, v[2] = {};
  cpu::adamw_step(p, g, m, v, 2, 0.1f, 0.9f, 0.95f, 0.f, 0.5f, 1);
  EXPECT_NEAR(p[0], 1.f * (1 - 0.05f) - 0.1f, 1e-6);
  EXPECT_NEAR(p[1], -2.f * (1 - 0.05f) + 0.1f, 1e-6);
}

TEST(Ops, SumSquaresIsExactAndOrderFixed) {
  std::vector<float> x(100000, 0.5f);
  EXPECT_DOUBLE_EQ(cpu::sum_squares(x.data(), x.size()), 25000.0);
}

}  // namespace
}  // namespace cr
