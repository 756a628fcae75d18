// Fused softmax + cross-entropy: the loss H(p, q) per position, in nats, and its gradient.
#include <algorithm>
#include <cmath>

#include "core/backend/cpu/ops.h"

namespace cr::cpu {

void crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                   const int32_t* targets, int N, int V, int Vp, float dloss) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* l = logits + (size_t)n * Vp;
    float mx = -INFINITY;
    for (int i = 0; i < V; i++) mx = std::max(mx, l[i]);
    double sum = 0.0;
    for (int i = 0; i < V; i++) sum += std::exp((double)(l[i] - mx));
    const int y = targets[n];
    losses[n] = (float)(std::log(sum) - (double)(l[y] - mx));
    if (!dlogits) continue;
    float* d = dlogits + (size_t)n * Vp;
    const float inv = (float)(1.0 / sum);
    // Read l[i] before writing d[i]: d may alias l.
    for (int i = 0; i < V; i++) d[i] = std::exp(l[i] - mx) * inv * dloss;
    d[y] -= dloss;
    for (int i = V; i < Vp; i++) d[i] = 0.f;
  }
}

}  // namespace cr::cpu
