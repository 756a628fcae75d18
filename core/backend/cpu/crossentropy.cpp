// Softmax cross-entropy: the loss H(p, q) per position, in nats, and its gradient. Written as
// the pieces a vocabulary-parallel shard computes (the full logits never exist on one rank
// under tensor parallelism); the single-shard fused form composes them. The per-row loops are
// vectorised (exp_approx, sums in double lanes) and compiled per ISA; the lane order is fixed, so
// results are deterministic.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/backend/cpu/ops.h"
#include "core/backend/cpu/parallel.h"
#include "core/backend/cpu/vec_math.h"

namespace cr::cpu {

namespace {

CR_CLONES float max_of(const float* l, int n) {
  float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int i = 0; i < n; i++) mx = std::max(mx, l[i]);
  return mx;
}

CR_CLONES double sum_exp(const float* l, int n, float shift) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; i++) s += (double)exp_approx(l[i] - shift);
  return s;
}

// d[i] = exp(l[i] - shift) * scale; d may alias l (each element is read before it is written).
CR_CLONES void scaled_exp(float* d, const float* l, int n, float shift, float scale) {
#pragma omp simd
  for (int i = 0; i < n; i++) d[i] = exp_approx(l[i] - shift) * scale;
}

}  // namespace

void crossentropy_row_max(float* row_max, const float* logits, int N, int Vl, int n_valid) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* l = logits + (size_t)n * Vl;
    row_max[n] = max_of(l, n_valid);
  }
}

void crossentropy_row_sums(float* sums, const float* logits, const float* row_max,
                           const int32_t* targets, int N, int Vl, int v0, int n_valid) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* l = logits + (size_t)n * Vl;
    const float mx = row_max[n];
    sums[n] = (float)sum_exp(l, n_valid, mx);
    const int y = targets[n] - v0;
    sums[N + n] = (y >= 0 && y < n_valid) ? l[y] : 0.f;
  }
}

void crossentropy_backward(float* dlogits, const float* logits, const float* row_max,
                           const float* sums, const int32_t* targets, int N, int Vl, int v0,
                           int n_valid, float dloss) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* l = logits + (size_t)n * Vl;
    float* d = dlogits + (size_t)n * Vl;
    if (targets[n] < 0) {  // not counted: no gradient
      std::fill(d, d + Vl, 0.f);
      continue;
    }
    const float mx = row_max[n];
    const float scale = dloss / sums[n];
    scaled_exp(d, l, n_valid, mx, scale);
    for (int i = std::max(n_valid, 0); i < Vl; i++) d[i] = 0.f;
    const int y = targets[n] - v0;
    if (y >= 0 && y < n_valid) d[y] -= dloss;
  }
}

void crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                   const int32_t* targets, int N, int V, int Vp, float dloss) {
  std::vector<float> row_max(N), sums(2 * (size_t)N);
  crossentropy_row_max(row_max.data(), logits, N, Vp, V);
  crossentropy_row_sums(sums.data(), logits, row_max.data(), targets, N, Vp, 0, V);
  for (int n = 0; n < N; n++)
    losses[n] = targets[n] < 0 ? 0.f : (float)(std::log((double)sums[n]) + row_max[n] - sums[N + n]);
  if (dlogits)
    crossentropy_backward(dlogits, logits, row_max.data(), sums.data(), targets, N, Vp, 0, V,
                          dloss);
}

}  // namespace cr::cpu
