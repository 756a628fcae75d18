// Finite-difference gradient checks of every CPU op. Each op's backward is checked against the
// central difference of L = sum(out * R) for a fixed random R (dout = R). Shapes are small but
// reach every branch (several heads, causal rows of every length, a padded vocabulary).
// Tolerance: fp32 central differences with h = 1e-2 are good to ~1e-3; a transposed weight or
// a missing term is off by O(1).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
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

// Compares analytic[i] with (L(x+h) - L(x-h)) / 2h for every element of x.
void expect_grad(const char* what, std::vector<float>& x, const std::vector<float>& analytic,
                 const std::function<double()>& loss, float h = 1e-2f) {
  ASSERT_EQ(x.size(), analytic.size());
  double max_err = 0, max_ref = 0;
  for (size_t i = 0; i < x.size(); i++) {
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
