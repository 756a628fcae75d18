// GELU with GPT-2's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
// Vectorised and compiled per ISA (CR_CLONES), through the identity 0.5 (1 + tanh(u)) =
// sigmoid(2u) = 1 / (1 + exp(-2u)), which stays accurate in both tails (1 + tanh(u) cancels for
// u << 0). The std::tanh version is cpu::ref::gelu_* (the oracle in tests).
#include "core/backend/cpu/ops.h"
#include "core/backend/cpu/parallel.h"
#include "core/backend/cpu/vec_math.h"

namespace cr::cpu {

namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

CR_CLONES void gelu_forward_range(float* out, const float* inp, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const float x = inp[i];
    const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
    out[i] = x / (1.f + exp_approx(-2.f * u));
  }
}

CR_CLONES void gelu_backward_range(float* dinp, const float* inp, const float* dout, size_t n) {
  for (size_t i = 0; i < n; i++) {
    // d/dx [x s(x)] with s = sigmoid(2u): s + x * 2 s (1 - s) * du/dx  (sech^2 u = 4 s (1 - s)).
    const float x = inp[i];
    const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
    const float s = 1.f / (1.f + exp_approx(-2.f * u));
    const float grad = s + x * 2.f * s * (1.f - s) * kSqrt2OverPi * (1.f + 3.f * kCubic * x * x);
    dinp[i] = grad * dout[i];
  }
}

}  // namespace

void gelu_forward(float* out, const float* inp, size_t n) {
  parallel_range(n, [&](size_t lo, size_t hi) { gelu_forward_range(out + lo, inp + lo, hi - lo); });
}

void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) {
  parallel_range(n, [&](size_t lo, size_t hi) {
    gelu_backward_range(dinp + lo, inp + lo, dout + lo, hi - lo);
  });
}

}  // namespace cr::cpu
