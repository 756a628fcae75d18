#include "core/backend/cpu/reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace cr::cpu::ref {

namespace {
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;
}  // namespace

void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int H,
                       const int32_t* kv_range) {
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
        const size_t bt = (size_t)b * T + t;
        const int lo = kv_range ? kv_range[2 * bt] : 0, hi = kv_range ? kv_range[2 * bt + 1] : t;
        for (int s = 0; s < T; s++) p[s] = 0.f;
        float mx = -INFINITY;
        for (int s = lo; s <= hi; s++) {
          const float* k = base + s * C3 + C + h * hs;
          float dot = 0.f;
          for (int i = 0; i < hs; i++) dot += q[i] * k[i];
          p[s] = dot * scale;
          mx = std::max(mx, p[s]);
        }
        float sum = 0.f;
        for (int s = lo; s <= hi; s++) {
          p[s] = std::exp(p[s] - mx);
          sum += p[s];
        }
        float inv = 1.f / sum;
        for (int s = lo; s <= hi; s++) p[s] *= inv;
        float* o = out + ((size_t)b * T + t) * C + h * hs;
        for (int i = 0; i < hs; i++) o[i] = 0.f;
        for (int s = lo; s <= hi; s++) {
          const float* v = base + s * C3 + 2 * C + h * hs;
          for (int i = 0; i < hs; i++) o[i] += p[s] * v[i];
        }
      }
    }
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att,
                        int B, int T, int C, int H) {
  // att is zero outside each query's keys, so the loops run over every key.
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
          for (int s = 0; s < T; s++) {
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
          for (int s = 0; s < T; s++) {
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

void gelu_forward(float* out, const float* inp, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) {
    float x = inp[i];
    out[i] = 0.5f * x * (1.f + std::tanh(kSqrt2OverPi * (x + kCubic * x * x * x)));
  }
}

void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) {
    float x = inp[i];
    float u = kSqrt2OverPi * (x + kCubic * x * x * x);
    float th = std::tanh(u);
    float sech2 = 1.f - th * th;
    float grad = 0.5f * (1.f + th) + 0.5f * x * sech2 * kSqrt2OverPi * (1.f + 3.f * kCubic * x * x);
    dinp[i] = grad * dout[i];
  }
}

}  // namespace cr::cpu::ref
