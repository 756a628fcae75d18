// Token + position embedding: the first op of the forward pass, the last of the backward.
#include "core/backend/cpu/ops.h"

namespace cr::cpu {

void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                       int B, int T, int C) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      float* o = out + ((size_t)b * T + t) * C;
      const float* e = wte + (size_t)tokens[b * T + t] * C;
      const float* p = wpe + (size_t)t * C;
      for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
    }
}

void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                        int B, int T, int C) {
  // Two rows may share a token, so rows cannot run in parallel; channels can. Each thread
  // walks every row in order over its own channel block, so the sum order never changes.
  constexpr int kBlock = 32;
#pragma omp parallel for schedule(static)
  for (int c0 = 0; c0 < C; c0 += kBlock) {
    int c1 = c0 + kBlock < C ? c0 + kBlock : C;
    for (int b = 0; b < B; b++)
      for (int t = 0; t < T; t++) {
        const float* d = dout + ((size_t)b * T + t) * C;
        float* e = dwte + (size_t)tokens[b * T + t] * C;
        float* p = dwpe + (size_t)t * C;
        for (int c = c0; c < c1; c++) {
          e[c] += d[c];
          p[c] += d[c];
        }
      }
  }
}

}  // namespace cr::cpu
