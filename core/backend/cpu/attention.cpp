// Causal multi-head self-attention, materialising the [T,T] probabilities per head.
// softmax(q k^T / sqrt(hs)) v with s <= t; the backward pass reuses the saved probabilities.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/backend/cpu/ops.h"

namespace cr::cpu {

void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int H) {
  const int hs = C / H;
  const size_t C3 = 3 * (size_t)C;
  const float scale = 1.f / std::sqrt((float)hs);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++) {
      const float* base = qkv + (size_t)b * T * C3;
      for (int t = 0; t < T; t++) {
        const float* q = base + t * C3 + h * hs;
        float* p = att + (((size_t)b * H + h) * T + t) * T;
        float mx = -INFINITY;
        for (int s = 0; s <= t; s++) {
          const float* k = base + s * C3 + C + h * hs;
          float dot = 0.f;
          for (int i = 0; i < hs; i++) dot += q[i] * k[i];
          p[s] = dot * scale;
          mx = std::max(mx, p[s]);
        }
        float sum = 0.f;
        for (int s = 0; s <= t; s++) {
          p[s] = std::exp(p[s] - mx);
          sum += p[s];
        }
        float inv = 1.f / sum;
        for (int s = 0; s <= t; s++) p[s] *= inv;
        for (int s = t + 1; s < T; s++) p[s] = 0.f;
        float* o = out + ((size_t)b * T + t) * C + h * hs;
        for (int i = 0; i < hs; i++) o[i] = 0.f;
        for (int s = 0; s <= t; s++) {
          const float* v = base + s * C3 + 2 * C + h * hs;
          for (int i = 0; i < hs; i++) o[i] += p[s] * v[i];
        }
      }
    }
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att,
                        int B, int T, int C, int H) {
  const int hs = C / H;
  const size_t C3 = 3 * (size_t)C;
  const float scale = 1.f / std::sqrt((float)hs);
  std::memset(dqkv, 0, sizeof(float) * (size_t)B * T * C3);
#pragma omp parallel
  {
    std::vector<float> dp(T);
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
      for (int h = 0; h < H; h++) {
        // Each (b, h) touches only its own head's channels of dqkv: no races.
        const float* base = qkv + (size_t)b * T * C3;
        float* dbase = dqkv + (size_t)b * T * C3;
        for (int t = 0; t < T; t++) {
          const float* p = att + (((size_t)b * H + h) * T + t) * T;
          const float* dy = dout + ((size_t)b * T + t) * C + h * hs;
          float pdp = 0.f;
          for (int s = 0; s <= t; s++) {
            const float* v = base + s * C3 + 2 * C + h * hs;
            float* dv = dbase + s * C3 + 2 * C + h * hs;
            float d = 0.f;
            for (int i = 0; i < hs; i++) {
              d += dy[i] * v[i];
              dv[i] += p[s] * dy[i];
            }
            dp[s] = d;
            pdp += p[s] * d;
          }
          const float* q = base + t * C3 + h * hs;
          float* dq = dbase + t * C3 + h * hs;
          for (int s = 0; s <= t; s++) {
            float ds = p[s] * (dp[s] - pdp) * scale;  // softmax backward, then the 1/sqrt(hs)
            const float* k = base + s * C3 + C + h * hs;
            float* dk = dbase + s * C3 + C + h * hs;
            for (int i = 0; i < hs; i++) {
              dq[i] += ds * k[i];
              dk[i] += ds * q[i];
            }
          }
        }
      }
  }
}

}  // namespace cr::cpu

namespace cr::cpu {

void attention_decode(float* out, const float* q, const float* kcache, const float* vcache,
                      int len, int C, int H) {
  const int hs = C / H;
  const float scale = 1.f / std::sqrt((float)hs);
  std::vector<float> p(len);
  for (int h = 0; h < H; h++) {
    float mx = -INFINITY;
    for (int s = 0; s < len; s++) {
      const float* k = kcache + (size_t)s * C + h * hs;
      float dot = 0.f;
      for (int i = 0; i < hs; i++) dot += q[h * hs + i] * k[i];
      p[s] = dot * scale;
      mx = std::max(mx, p[s]);
    }
    float sum = 0.f;
    for (int s = 0; s < len; s++) {
      p[s] = std::exp(p[s] - mx);
      sum += p[s];
    }
    float* o = out + h * hs;
    for (int i = 0; i < hs; i++) o[i] = 0.f;
    for (int s = 0; s < len; s++) {
      const float* v = vcache + (size_t)s * C + h * hs;
      const float w = p[s] / sum;
      for (int i = 0; i < hs; i++) o[i] += w * v[i];
    }
  }
}

}  // namespace cr::cpu
