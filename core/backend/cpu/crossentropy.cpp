// Softmax cross-entropy: the loss H(p, q) per position, in nats, and its gradient. Written as
// the pieces a vocabulary-parallel shard computes (the full logits never exist on one rank
// under tensor parallelism); the single-shard fused form composes them.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/backend/cpu/ops.h"

namespace cr::cpu {

void crossentropy_row_max(float* row_max, const float* logits, int N, int Vl, int n_valid) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* l = logits + (size_t)n * Vl;
    float mx = -INFINITY;
    for (int i = 0; i < n_valid; i++) mx = std::max(mx, l[i]);
    row_max[n] = mx;
  }
}

void crossentropy_row_sums(float* sums, const float* logits, const float* row_max,
                           const int32_t* targets, int N, int Vl, int v0, int n_valid) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* l = logits + (size_t)n * Vl;
    const float mx = row_max[n];
    double s = 0.0;
    for (int i = 0; i < n_valid; i++) s += std::exp((double)(l[i] - mx));
    sums[n] = (float)s;
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
    const float mx = row_max[n];
    const float scale = dloss / sums[n];
    // Read l[i] before writing d[i]: d may alias l.
    for (int i = 0; i < n_valid; i++) d[i] = std::exp(l[i] - mx) * scale;
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
    losses[n] = (float)(std::log((double)sums[n]) + row_max[n] - sums[N + n]);
  if (dlogits)
    crossentropy_backward(dlogits, logits, row_max.data(), sums.data(), targets, N, Vp, 0, V,
                          dloss);
}

}  // namespace cr::cpu
