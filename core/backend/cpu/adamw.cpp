// AdamW update and the reductions the optimizer needs (global gradient norm, scaling).
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/backend/cpu/ops.h"

namespace cr::cpu {

void adamw_step(float* params, const float* grads, float* m, float* v, size_t n, float lr,
                float beta1, float beta2, float eps, float weight_decay, int step) {
  const float bc1 = 1.f - std::pow(beta1, (float)step);
  const float bc2 = 1.f - std::pow(beta2, (float)step);
  const float decay = 1.f - lr * weight_decay;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) {
    float g = grads[i];
    float mi = beta1 * m[i] + (1.f - beta1) * g;
    float vi = beta2 * v[i] + (1.f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float denom = std::sqrt(vi / bc2) + eps;
    params[i] = params[i] * decay - lr * (mi / bc1) / denom;
  }
}

double sum_squares(const float* x, size_t n) {
  // Fixed-size chunks summed in chunk order: the same bits whatever the thread count.
  constexpr size_t kChunk = 1 << 14;
  const size_t nchunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(nchunks, 0.0);
#pragma omp parallel for schedule(static)
  for (size_t k = 0; k < nchunks; k++) {
    double s = 0.0;
    const size_t end = std::min(n, (k + 1) * kChunk);
    for (size_t i = k * kChunk; i < end; i++) s += (double)x[i] * x[i];
    partial[k] = s;
  }
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

void scale(float* x, size_t n, float s) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) x[i] *= s;
}

}  // namespace cr::cpu
