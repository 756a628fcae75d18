// Token + position embedding: the first op of the forward pass, the last of the backward.
#include "core/backend/cpu/ops.h"

namespace cr::cpu {

void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                       int B, int T, int C, int vocab_start, int vocab_count) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      float* o = out + ((size_t)b * T + t) * C;
      const int64_t row = (int64_t)tokens[b * T + t] - vocab_start;
      const bool mine = row >= 0 && row < vocab_count;
      const float* e = mine ? wte + (size_t)row * C : nullptr;
      const float* p = wpe ? wpe + (size_t)t * C : nullptr;
      for (int c = 0; c < C; c++) o[c] = (e ? e[c] : 0.f) + (p ? p[c] : 0.f);
    }
}

void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                        int B, int T, int C, int vocab_start, int vocab_count) {
  // Two rows may share a token, so rows cannot run in parallel; channels can. Each thread
  // walks every row in order over its own channel block, so the sum order never changes.
  constexpr int kBlock = 32;
#pragma omp parallel for schedule(static)
  for (int c0 = 0; c0 < C; c0 += kBlock) {
    int c1 = c0 + kBlock < C ? c0 + kBlock : C;
    for (int b = 0; b < B; b++)
      for (int t = 0; t < T; t++) {
        const float* d = dout + ((size_t)b * T + t) * C;
        const int64_t row = (int64_t)tokens[b * T + t] - vocab_start;
        if (row >= 0 && row < vocab_count) {
          float* e = dwte + (size_t)row * C;
          for (int c = c0; c < c1; c++) e[c] += d[c];
        }
        if (dwpe) {
          float* p = dwpe + (size_t)t * C;
          for (int c = c0; c < c1; c++) p[c] += d[c];
        }
      }
  }
}

}  // namespace cr::cpu
