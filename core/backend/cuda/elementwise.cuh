// Element-wise kernels (the CUDA side of cpu/gelu.cpp, swiglu.cpp, residual.cpp and scale):
// GELU (tanh approximation) forward/backward, SwiGLU forward/backward, the residual add and the
// in-place scale. Each is memory-bound: one load and one store per element, grid-stride loops
// over the flat index so any n (ragged, or beyond 2^31) is covered by a bounded grid.
// Storage T is float or bf16; arithmetic is fp32.
#pragma once

#include <cstddef>

#include "core/backend/cuda/cuda_compat.cuh"

namespace cr::cuda {

constexpr int kEwBlock = 256;
constexpr long long kEwMaxBlocks = 1 << 16;  // grid-stride beyond ~16M elements

inline dim3 ew_grid(size_t n) {
  const long long blocks = ceil_div((long long)n, kEwBlock);
  return dim3((unsigned)(blocks < kEwMaxBlocks ? blocks : kEwMaxBlocks));
}

// Grid-stride loop over [0, n): the first index and the stride of this thread.
CR_DEV size_t ew_first() { return (size_t)blockIdx.x * blockDim.x + threadIdx.x; }
CR_DEV size_t ew_stride() { return (size_t)gridDim.x * blockDim.x; }

// ---- GELU: exactly the CPU op's formula, 0.5 (1 + tanh(u)) written as sigmoid(2u) --------------
constexpr float kGeluSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

CR_DEV float gelu_value(float x) {
  const float u = kGeluSqrt2OverPi * (x + kGeluCubic * x * x * x);
  return x / (1.f + expf(-2.f * u));
}
// d/dx [x s], s = sigmoid(2u): s + x * 2 s (1 - s) du/dx (sech^2 u = 4 s (1 - s)).
CR_DEV float gelu_grad(float x) {
  const float u = kGeluSqrt2OverPi * (x + kGeluCubic * x * x * x);
  const float s = 1.f / (1.f + expf(-2.f * u));
  return s + x * 2.f * s * (1.f - s) * kGeluSqrt2OverPi * (1.f + 3.f * kGeluCubic * x * x);
}

template <class T>
__global__ void gelu_forward_kernel(T* out, const T* inp, size_t n) {
  for (size_t i = ew_first(); i < n; i += ew_stride())
    out[i] = from_f32<T>(gelu_value(to_f32(inp[i])));
}

template <class T>
__global__ void gelu_backward_kernel(T* dinp, const T* inp, const T* dout, size_t n) {
  for (size_t i = ew_first(); i < n; i += ew_stride())
    dinp[i] = from_f32<T>(gelu_grad(to_f32(inp[i])) * to_f32(dout[i]));
}

// ---- SwiGLU: inp rows [gate | up] of F each; out [N,F] = silu(gate) * up ----------------------
template <class T>
__global__ void swiglu_forward_kernel(T* out, const T* inp, size_t n, int F) {
  for (size_t i = ew_first(); i < n; i += ew_stride()) {
    const size_t row = i / F, f = i - row * F;
    const T* r = inp + row * 2 * F;
    const float g = to_f32(r[f]);
    out[i] = from_f32<T>(g / (1.f + expf(-g)) * to_f32(r[F + f]));
  }
}

// dgate = dout * up * (s + g s (1 - s)), dup = dout * silu(g); dinp [N,2F] overwritten.
template <class T>
__global__ void swiglu_backward_kernel(T* dinp, const T* inp, const T* dout, size_t n, int F) {
  for (size_t i = ew_first(); i < n; i += ew_stride()) {
    const size_t row = i / F, f = i - row * F;
    const T* r = inp + row * 2 * F;
    T* dr = dinp + row * 2 * F;
    const float g = to_f32(r[f]), up = to_f32(r[F + f]), d = to_f32(dout[i]);
    const float s = 1.f / (1.f + expf(-g));
    dr[f] = from_f32<T>(d * up * (s + g * s * (1.f - s)));
    dr[F + f] = from_f32<T>(d * (g * s));
  }
}

// ---- residual add and scale -------------------------------------------------------------------
template <class T>
__global__ void residual_forward_kernel(T* out, const T* a, const T* b, size_t n) {
  for (size_t i = ew_first(); i < n; i += ew_stride())
    out[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i]));
}

template <class T>
__global__ void scale_kernel(T* x, size_t n, float s) {
  for (size_t i = ew_first(); i < n; i += ew_stride()) x[i] = from_f32<T>(to_f32(x[i]) * s);
}

// ---- launchers (flat arrays of n elements of T; SwiGLU: inp/dinp [N,2F], out/dout [N,F]) -------

// Bytes moved: n*sizeof(T) read, n*sizeof(T) written.
template <class L, class T>
void run_gelu_forward(const L& launch, T* out, const T* inp, size_t n) {
  launch(ew_grid(n), dim3(kEwBlock), gelu_forward_kernel<T>, out, inp, n);
}

// Bytes moved: 2n*sizeof(T) read, n*sizeof(T) written.
template <class L, class T>
void run_gelu_backward(const L& launch, T* dinp, const T* inp, const T* dout, size_t n) {
  launch(ew_grid(n), dim3(kEwBlock), gelu_backward_kernel<T>, dinp, inp, dout, n);
}

// Bytes moved: 2NF*sizeof(T) read, NF*sizeof(T) written.
template <class L, class T>
void run_swiglu_forward(const L& launch, T* out, const T* inp, int N, int F) {
  const size_t n = (size_t)N * F;
  launch(ew_grid(n), dim3(kEwBlock), swiglu_forward_kernel<T>, out, inp, n, F);
}

// Bytes moved: 3NF*sizeof(T) read, 2NF*sizeof(T) written.
template <class L, class T>
void run_swiglu_backward(const L& launch, T* dinp, const T* inp, const T* dout, int N, int F) {
  const size_t n = (size_t)N * F;
  launch(ew_grid(n), dim3(kEwBlock), swiglu_backward_kernel<T>, dinp, inp, dout, n, F);
}

// Bytes moved: 2n*sizeof(T) read, n*sizeof(T) written.
template <class L, class T>
void run_residual_forward(const L& launch, T* out, const T* a, const T* b, size_t n) {
  launch(ew_grid(n), dim3(kEwBlock), residual_forward_kernel<T>, out, a, b, n);
}

// Bytes moved: n*sizeof(T) read and written.
template <class L, class T>
void run_scale(const L& launch, T* x, size_t n, float s) {
  launch(ew_grid(n), dim3(kEwBlock), scale_kernel<T>, x, n, s);
}

}  // namespace cr::cuda
