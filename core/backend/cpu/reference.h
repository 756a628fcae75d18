// The simple CPU ops the optimised ones replaced, kept as their oracle: straightforward loops
// that follow the math line by line (attention materialises every [T,T] probability matrix,
// GELU calls std::tanh). Tests compare the fast ops with these on random and ragged shapes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cr::cpu::ref {

// out [B,T,C]; att [B,H,T,T] receives the probabilities (zero above the diagonal, or outside
// each query's keys [lo, hi] of kv_range [B,T,2] when given: backend.h).
void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int H,
                       const int32_t* kv_range = nullptr);
// dqkv is overwritten.
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att,
                        int B, int T, int C, int H);
void gelu_forward(float* out, const float* inp, size_t n);
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n);

}  // namespace cr::cpu::ref
