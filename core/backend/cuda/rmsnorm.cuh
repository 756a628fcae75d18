// RMSNorm kernels (the CUDA side of core/backend/cpu/rmsnorm.cpp):
//   out = x * rstd * weight,  rstd = 1 / sqrt(mean(x^2) + eps);  no mean, no bias.
// The same structure as layernorm.cuh, whose geometry and deterministic column reduction this
// file reuses: a warp per row for forward, apply and dinp; dweight through per-chunk partial sums
// in scratch [chunks][C], then column_partials_reduce in a fixed order (no float atomics).
#pragma once

#include <cstddef>

#include "core/backend/cuda/cuda_compat.cuh"
#include "core/backend/cuda/layernorm.cuh"

namespace cr::cuda {

// The output element, shared by forward and apply (so a recompute is bit-identical).
CR_DEV float rmsnorm_value(float x, float s, float w) { return x * s * w; }

template <class T>
CR_DEV void rmsnorm_row(T* o, float* rstd, const T* x, const T* weight, int C, float eps,
                        int lane) {
  float sq = 0.f;
  for (int c = lane; c < C; c += kWarpSize) {
    const float v = to_f32(x[c]);
    sq += v * v;
  }
  const float s = 1.f / sqrtf(warp_sum(sq) / (float)C + eps);
  for (int c = lane; c < C; c += kWarpSize)
    o[c] = from_f32<T>(rmsnorm_value(to_f32(x[c]), s, to_f32(weight[c])));
  if (lane == 0) *rstd = s;
}

template <class T>
__global__ void rmsnorm_forward_kernel(T* out, float* rstd, const T* inp, const T* weight, int N,
                                       int C, float eps) {
  const int row = norm_row();
  if (row >= N) return;  // whole warps leave together; no block barrier in this kernel
  const size_t off = (size_t)row * C;
  rmsnorm_row(out + off, rstd + row, inp + off, weight, C, eps, lane_id());
}

template <class T>
__global__ void rmsnorm_apply_kernel(T* out, const T* inp, const float* rstd, const T* weight,
                                     int N, int C) {
  const int row = norm_row();
  if (row >= N) return;
  const size_t off = (size_t)row * C;
  const float s = rstd[row];
  for (int c = lane_id(); c < C; c += kWarpSize)
    out[off + c] = from_f32<T>(rmsnorm_value(to_f32(inp[off + c]), s, to_f32(weight[c])));
}

// x = a + b stored in T, then the norm of x as stored (each lane reads back its own stores).
template <class T>
__global__ void residual_rmsnorm_forward_kernel(T* x, T* out, float* rstd, const T* a, const T* b,
                                                const T* weight, int N, int C, float eps) {
  const int row = norm_row();
  if (row >= N) return;
  const size_t off = (size_t)row * C;
  const int lane = lane_id();
  for (int c = lane; c < C; c += kWarpSize)
    x[off + c] = from_f32<T>(to_f32(a[off + c]) + to_f32(b[off + c]));
  rmsnorm_row(out + off, rstd + row, x + off, weight, C, eps, lane);
}

// dinp += rstd * (dnorm - norm * mean(dnorm * norm)), dnorm = dout * weight, norm = x * rstd.
template <class T>
__global__ void rmsnorm_backward_dinp_kernel(T* dinp, const T* dout, const T* inp,
                                             const T* weight, const float* rstd, int N, int C) {
  const int row = norm_row();
  if (row >= N) return;
  const size_t off = (size_t)row * C;
  const int lane = lane_id();
  const float s = rstd[row];
  float dot = 0.f;
  for (int c = lane; c < C; c += kWarpSize)
    dot += to_f32(dout[off + c]) * to_f32(weight[c]) * to_f32(inp[off + c]) * s;
  const float dot_mean = warp_sum(dot) / (float)C;
  for (int c = lane; c < C; c += kWarpSize) {
    const float x = to_f32(inp[off + c]);
    const float dn = to_f32(dout[off + c]) * to_f32(weight[c]);
    dinp[off + c] = from_f32<T>(to_f32(dinp[off + c]) + (dn - x * s * dot_mean) * s);
  }
}

// partial [gridDim.y][C]: per chunk of rows, sum dout * x * rstd (dweight).
template <class T>
__global__ void rmsnorm_param_partials_kernel(float* partial, const T* dout, const T* inp,
                                              const float* rstd, int N, int C, int chunk_rows) {
  CR_SHARED(float, lanes, kPartialBlock);
  const PartialRole r = partial_role(N, chunk_rows);
  float dw = 0.f;
  if (r.c < C) {
    for (int n = r.n0 + r.lane; n < r.n1; n += kPartialLanes) {
      const size_t i = (size_t)n * C + r.c;
      dw += to_f32(dout[i]) * to_f32(inp[i]) * rstd[n];
    }
  }
  store_column_partial(partial, lanes, dw, r, C);
}

// ---- launchers (inp/out/x/a/b/dout/dinp [N,C] of T; weight [C] of T; rstd [N] f32; dweight [C]
// f32, accumulated) -------------------------------------------------------------------------------

// Bytes moved: N*C*sizeof(T) read (+ one cached re-read) and written, 4N for rstd.
template <class L, class T>
void run_rmsnorm_forward(const L& launch, T* out, float* rstd, const T* inp, const T* weight,
                         int N, int C, float eps) {
  launch(norm_row_grid(N), dim3(kNormBlock), rmsnorm_forward_kernel<T>, out, rstd, inp, weight, N,
         C, eps);
}

// Bytes moved: N*C*sizeof(T) read and written, 4N read.
template <class L, class T>
void run_rmsnorm_apply(const L& launch, T* out, const T* inp, const float* rstd, const T* weight,
                       int N, int C) {
  launch(norm_row_grid(N), dim3(kNormBlock), rmsnorm_apply_kernel<T>, out, inp, rstd, weight, N,
         C);
}

// Bytes moved: 2*N*C*sizeof(T) read, 2*N*C*sizeof(T) written, 4N for rstd.
template <class L, class T>
void run_residual_rmsnorm_forward(const L& launch, T* x, T* out, float* rstd, const T* a,
                                  const T* b, const T* weight, int N, int C, float eps) {
  launch(norm_row_grid(N), dim3(kNormBlock), residual_rmsnorm_forward_kernel<T>, x, out, rstd, a,
         b, weight, N, C, eps);
}

// The f32 scratch rmsnorm_backward needs: [chunks][C].
inline size_t rmsnorm_backward_scratch_floats(int N, int C) {
  return (size_t)norm_chunks(N) * (size_t)C;
}

// scratch: rmsnorm_backward_scratch_floats(N, C) floats, overwritten.
// Bytes moved: 4*N*C*sizeof(T) (dinp kernel) + 2*N*C*sizeof(T) (partials) + 8*chunks*C.
template <class L, class T>
void run_rmsnorm_backward(const L& launch, T* dinp, float* dweight, float* scratch, const T* dout,
                          const T* inp, const T* weight, const float* rstd, int N, int C) {
  if (N <= 0 || C <= 0) return;
  launch(norm_row_grid(N), dim3(kNormBlock), rmsnorm_backward_dinp_kernel<T>, dinp, dout, inp,
         weight, rstd, N, C);
  launch(norm_partial_grid(N, C), dim3(kPartialBlock), rmsnorm_param_partials_kernel<T>, scratch,
         dout, inp, rstd, N, C, norm_chunk_rows(N));
  run_column_partials_reduce(launch, dweight, static_cast<float*>(nullptr), scratch,
                             norm_chunks(N), C);
}

}  // namespace cr::cuda
