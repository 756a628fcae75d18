// SwiGLU (Shazeer 2020), the Llama MLP's gate: out = silu(gate) * up, silu(g) = g sigmoid(g).
// inp rows are [gate | up], F channels each (both column-parallel halves of one rank).
#include <cmath>

#include "core/backend/cpu/ops.h"
#include "core/backend/cpu/vec_math.h"
#include "core/backend/cpu/parallel.h"

namespace cr::cpu {

namespace {

CR_CLONES void swiglu_row(float* o, const float* gate, const float* up, int F) {
  for (int i = 0; i < F; i++) {
    const float g = gate[i];
    o[i] = g / (1.f + exp_approx(-g)) * up[i];
  }
}

CR_CLONES void swiglu_backward_row(float* dgate, float* dup, const float* gate, const float* up,
                                   const float* dout, int F) {
  for (int i = 0; i < F; i++) {
    const float g = gate[i], s = 1.f / (1.f + exp_approx(-g));
    const float silu = g * s;
    // d silu / dg = s + g s (1 - s)
    dgate[i] = dout[i] * up[i] * (s + g * s * (1.f - s));
    dup[i] = dout[i] * silu;
  }
}

}  // namespace

void swiglu_forward(float* out, const float* inp, int N, int F) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* row = inp + (size_t)n * 2 * F;
    swiglu_row(out + (size_t)n * F, row, row + F, F);
  }
}

void swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int F) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* row = inp + (size_t)n * 2 * F;
    float* drow = dinp + (size_t)n * 2 * F;
    swiglu_backward_row(drow, drow + F, row, row + F, dout + (size_t)n * F, F);
  }
}

}  // namespace cr::cpu
