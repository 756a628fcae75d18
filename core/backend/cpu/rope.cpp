// Rotary position embedding (RoPE, Su et al. 2021) in Hugging Face's rotate-half convention:
// within each head of hs channels, channel i < hs/2 pairs with channel i + hs/2, and the pair is
// rotated by angle pos * theta^(-2i/hs):
//   x'[i]        = x[i] cos - x[i + hs/2] sin
//   x'[i + hs/2] = x[i + hs/2] cos + x[i] sin
// Backward applies the inverse rotation (the transpose) to the incoming gradient.
// The angles follow the recipe of Meta's reference code and Hugging Face transformers, in fp32:
// inv_freq = 1 / theta^(2i/hs) and angle = pos * inv_freq each rounded to float, so a model
// imported from them sees the same rotations at long context (fp32 angles drift from exact ones
// by ~pos * 6e-8 rad); cos and sin of that float angle are then computed exactly and rounded.
#include <cmath>
#include <vector>

#include "core/backend/cpu/ops.h"

namespace cr::cpu {

namespace {

// cos/sin tables [T, hs/2] for positions pos0 .. pos0 + T - 1.
void rope_tables(std::vector<float>& cs, std::vector<float>& sn, int T, int hs, float theta,
                 int pos0) {
  const int half = hs / 2;
  cs.resize((size_t)T * half);
  sn.resize((size_t)T * half);
  for (int i = 0; i < half; i++) {
    const float exponent = (float)(2 * i) / (float)hs;
    const float inv_freq = 1.f / (float)std::pow((double)theta, (double)exponent);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
      const float a = (float)(pos0 + t) * inv_freq;
      cs[(size_t)t * half + i] = (float)std::cos((double)a);
      sn[(size_t)t * half + i] = (float)std::sin((double)a);
    }
  }
}

void rotate(float* x, int B, int T, int ld, int n_heads, int hs, float theta, int pos0,
            float sign) {
  std::vector<float> cs, sn;
  rope_tables(cs, sn, T, hs, theta, pos0);
  const int half = hs / 2;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      const float* c = cs.data() + (size_t)t * half;
      const float* s = sn.data() + (size_t)t * half;
      float* row = x + ((size_t)b * T + t) * ld;
      for (int h = 0; h < n_heads; h++) {
        float* v = row + (size_t)h * hs;
        for (int i = 0; i < half; i++) {
          const float x0 = v[i], x1 = v[i + half], si = sign * s[i];
          v[i] = x0 * c[i] - x1 * si;
          v[i + half] = x1 * c[i] + x0 * si;
        }
      }
    }
}

}  // namespace

void rope_forward(float* x, int B, int T, int ld, int n_heads, int hs, float theta, int pos0) {
  rotate(x, B, T, ld, n_heads, hs, theta, pos0, 1.f);
}

void rope_backward(float* dx, int B, int T, int ld, int n_heads, int hs, float theta, int pos0) {
  rotate(dx, B, T, ld, n_heads, hs, theta, pos0, -1.f);
}

}  // namespace cr::cpu
