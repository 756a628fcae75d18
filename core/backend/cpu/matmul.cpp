// Linear layers through cpu::gemm (gemm.cpp: oneDNN, chosen by measurement). Weights are [OC, C] (out-features major, as nn.Linear);
// the Hugging Face Conv1D layout [C, OC] is converted only at import/export.
#include "core/backend/cpu/gemm.h"
#include "core/backend/cpu/ops.h"

namespace cr::cpu {

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                    int C, int OC, int ldo) {
  if (ldo <= 0) ldo = OC;
  gemm(false, true, N, OC, C, 1.f, inp, C, weight, C, 0.f, out, ldo);
  if (!bias) return;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    float* o = out + (size_t)n * ldo;
    for (int j = 0; j < OC; j++) o[j] += bias[j];
  }
}

void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int N, int C, int OC, int ldd,
                     bool accumulate_dinp) {
  if (ldd <= 0) ldd = OC;
  if (dinp)
    gemm(false, false, N, C, OC, 1.f, dout, ldd, weight, C, accumulate_dinp ? 1.f : 0.f, dinp, C);
  gemm(true, false, OC, C, N, 1.f, dout, ldd, inp, C, 1.f, dweight, C);
  if (!dbias) return;
  constexpr int kBlock = 64;  // split output channels, sum rows in order: deterministic
#pragma omp parallel for schedule(static)
  for (int j0 = 0; j0 < OC; j0 += kBlock) {
    int j1 = j0 + kBlock < OC ? j0 + kBlock : OC;
    for (int n = 0; n < N; n++) {
      const float* d = dout + (size_t)n * ldd;
      for (int j = j0; j < j1; j++) dbias[j] += d[j];
    }
  }
}

}  // namespace cr::cpu
