// AdamW update and the reductions the optimizer needs (global gradient norm, scaling).
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/backend/cpu/ops.h"
#include "core/backend/cpu/parallel.h"

namespace cr::cpu {

namespace {

// The update of n consecutive elements; vectorised (sqrt and divide included), per ISA.
CR_CLONES void adamw_range(float* params, const float* grads, float* m, float* v, size_t n,
                           float lr, float beta1, float beta2, float eps, float decay, float bc1,
                           float bc2) {
  for (size_t i = 0; i < n; i++) {
    const float g = grads[i];
    const float mi = beta1 * m[i] + (1.f - beta1) * g;
    const float vi = beta2 * v[i] + (1.f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = std::sqrt(vi / bc2) + eps;
    params[i] = params[i] * decay - lr * (mi / bc1) / denom;
  }
}

}  // namespace

void adamw_step(float* params, const float* grads, float* m, float* v, size_t n, float lr,
                float beta1, float beta2, float eps, float weight_decay, int step) {
  const AdamWSegment seg{0, n, weight_decay};
  adamw_step_segments(params, grads, m, v, &seg, 1, lr, beta1, beta2, eps, step);
}

void adamw_step_segments(float* params, const float* grads, float* m, float* v,
                         const AdamWSegment* segs, size_t nsegs, float lr, float beta1,
                         float beta2, float eps, int step) {
  const float bc1 = 1.f - std::pow(beta1, (float)step);
  const float bc2 = 1.f - std::pow(beta2, (float)step);
  size_t total = 0;
  for (size_t k = 0; k < nsegs; k++) total = std::max(total, segs[k].offset + segs[k].n);
  // One parallel pass over the flat buffer: each thread takes a contiguous share of elements,
  // across tensor boundaries, applying each tensor's decay.
  parallel_range(total, [&](size_t lo, size_t hi) {
    for (size_t k = 0; k < nsegs; k++) {
      const size_t a = std::max(lo, segs[k].offset), b = std::min(hi, segs[k].offset + segs[k].n);
      if (a < b)
        adamw_range(params + a, grads + a, m + a, v + a, b - a, lr, beta1, beta2, eps,
                    1.f - lr * segs[k].weight_decay, bc1, bc2);
    }
  });
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
