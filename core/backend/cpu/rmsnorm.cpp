// RMSNorm over the channel dimension (Llama blocks and their final norm; Zhang & Sennrich 2019):
//   out = x * rstd * weight,  rstd = 1 / sqrt(mean(x^2) + eps).  No mean is subtracted, no bias.
#include <cmath>

#include "core/backend/cpu/ops.h"

namespace cr::cpu {

namespace {

inline void rms_row(float* o, float* rstd, const float* x, const float* weight, int C, float eps) {
  float ss = 0.f;
  for (int c = 0; c < C; c++) ss += x[c] * x[c];
  const float s = 1.f / std::sqrt(ss / C + eps);
  for (int c = 0; c < C; c++) o[c] = x[c] * s * weight[c];
  *rstd = s;
}

}  // namespace

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                     float eps) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++)
    rms_row(out + (size_t)n * C, rstd + n, inp + (size_t)n * C, weight, C, eps);
}

void rmsnorm_apply(float* out, const float* inp, const float* rstd, const float* weight, int N,
                   int C) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* x = inp + (size_t)n * C;
    float* o = out + (size_t)n * C;
    const float s = rstd[n];
    for (int c = 0; c < C; c++) o[c] = x[c] * s * weight[c];
  }
}

void residual_rmsnorm_forward(float* x, float* out, float* rstd, const float* a, const float* b,
                              const float* weight, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    float* xr = x + (size_t)n * C;
    const float* ar = a + (size_t)n * C;
    const float* br = b + (size_t)n * C;
    for (int c = 0; c < C; c++) xr[c] = ar[c] + br[c];
    rms_row(out + (size_t)n * C, rstd + n, xr, weight, C, eps);
  }
}

void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int N, int C) {
  // dx = rstd * (dnorm - norm * mean(dnorm * norm)),  dnorm = dout * weight,  norm = x * rstd.
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* x = inp + (size_t)n * C;
    const float* d = dout + (size_t)n * C;
    const float s = rstd[n];
    float dot = 0.f;
    for (int c = 0; c < C; c++) dot += d[c] * weight[c] * x[c] * s;
    dot /= C;
    float* dx = dinp + (size_t)n * C;
    for (int c = 0; c < C; c++) dx[c] += (d[c] * weight[c] - x[c] * s * dot) * s;
  }
  // The weight's gradient sums over rows: split channels, never rows (a fixed order).
  constexpr int kBlock = 32;
#pragma omp parallel for schedule(static)
  for (int c0 = 0; c0 < C; c0 += kBlock) {
    const int c1 = c0 + kBlock < C ? c0 + kBlock : C;
    for (int n = 0; n < N; n++) {
      const float* x = inp + (size_t)n * C;
      const float* d = dout + (size_t)n * C;
      const float s = rstd[n];
      for (int c = c0; c < c1; c++) dweight[c] += d[c] * x[c] * s;
    }
  }
}

}  // namespace cr::cpu
