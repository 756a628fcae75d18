// LayerNorm over the channel dimension (pre-norm GPT-2 blocks and the final ln_f).
#include <cmath>

#include "core/backend/cpu/ops.h"

namespace cr::cpu {

namespace {

// One row: two-pass variance (no cancellation when |mean| >> std).
inline void normalize_row(float* o, float* mean, float* rstd, const float* x, const float* weight,
                          const float* bias, int C, float eps) {
  float m = 0.f;
  for (int c = 0; c < C; c++) m += x[c];
  m /= C;
  float var = 0.f;
  for (int c = 0; c < C; c++) var += (x[c] - m) * (x[c] - m);
  var /= C;
  const float s = 1.f / std::sqrt(var + eps);
  for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * weight[c] + bias[c];
  *mean = m;
  *rstd = s;
}

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++)
    normalize_row(out + (size_t)n * C, mean + n, rstd + n, inp + (size_t)n * C, weight, bias, C,
                  eps);
}

void layernorm_apply(float* out, const float* inp, const float* mean, const float* rstd,
                     const float* weight, const float* bias, int N, int C) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* x = inp + (size_t)n * C;
    float* o = out + (size_t)n * C;
    const float m = mean[n], s = rstd[n];
    for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * weight[c] + bias[c];
  }
}

void residual_layernorm_forward(float* x, float* out, float* mean, float* rstd, const float* a,
                                const float* b, const float* weight, const float* bias, int N,
                                int C, float eps) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    float* xr = x + (size_t)n * C;
    const float* ar = a + (size_t)n * C;
    const float* br = b + (size_t)n * C;
    for (int c = 0; c < C; c++) xr[c] = ar[c] + br[c];
    normalize_row(out + (size_t)n * C, mean + n, rstd + n, xr, weight, bias, C, eps);
  }
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int N, int C) {
  // dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)), dnorm = dout * weight.
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* x = inp + (size_t)n * C;
    const float* d = dout + (size_t)n * C;
    float m = mean[n], s = rstd[n];
    float dnorm_mean = 0.f, dnorm_norm_mean = 0.f;
    for (int c = 0; c < C; c++) {
      float dn = d[c] * weight[c];
      dnorm_mean += dn;
      dnorm_norm_mean += dn * (x[c] - m) * s;
    }
    dnorm_mean /= C;
    dnorm_norm_mean /= C;
    float* dx = dinp + (size_t)n * C;
    for (int c = 0; c < C; c++) {
      float norm = (x[c] - m) * s;
      dx[c] += (d[c] * weight[c] - dnorm_mean - norm * dnorm_norm_mean) * s;
    }
  }
  // Parameter gradients sum over rows: split channels, never rows, to keep the order fixed.
  constexpr int kBlock = 32;
#pragma omp parallel for schedule(static)
  for (int c0 = 0; c0 < C; c0 += kBlock) {
    int c1 = c0 + kBlock < C ? c0 + kBlock : C;
    for (int n = 0; n < N; n++) {
      const float* x = inp + (size_t)n * C;
      const float* d = dout + (size_t)n * C;
      float m = mean[n], s = rstd[n];
      for (int c = c0; c < c1; c++) {
        dweight[c] += d[c] * (x[c] - m) * s;
        dbias[c] += d[c];
      }
    }
  }
}

}  // namespace cr::cpu
