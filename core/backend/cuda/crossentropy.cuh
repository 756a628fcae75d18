// Vocabulary-parallel softmax cross-entropy kernels (the CUDA side of
// core/backend/cpu/crossentropy.cpp). A shard holds logit columns [v0, v0 + Vl) of each of N
// rows, the first n_valid of them real tokens (the rest padding). One block per row: each
// thread strides over the row's columns (coalesced), then a fixed-shape warp/block reduction,
// so the results are deterministic. Logits and dlogits are T (f32|bf16); row_max and sums f32;
// targets i32 (global vocabulary ids; a negative target is not counted, PyTorch's ignore_index:
// target logit 0, gradient row 0, and it never indexes memory).
#pragma once

#include "core/backend/cuda/cuda_compat.cuh"

namespace cr::cuda {

namespace ce_detail {

constexpr int kBlock = 256;  // threads per row: 8 warps
constexpr int kWarps = kBlock / kWarpSize;

// Max / sum of v over the block, returned to every thread. warp_buf: CR_SHARED float[kWarps]; one
// call per kernel (a second call would need a barrier before reusing warp_buf).
template <class S>
CR_DEV float block_max(float v, S& warp_buf) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  v = warp_max(v);
  if (lane == 0) warp_buf[warp] = v;
  __syncthreads();
  return warp_max(lane < kWarps ? warp_buf[lane] : -INFINITY);
}
template <class S>
CR_DEV float block_sum(float v, S& warp_buf) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  v = warp_sum(v);
  if (lane == 0) warp_buf[warp] = v;
  __syncthreads();
  return warp_sum(lane < kWarps ? warp_buf[lane] : 0.f);
}

}  // namespace ce_detail

// row_max[n] = max over the row's n_valid real columns (-inf when n_valid == 0).
template <class T>
__global__ void crossentropy_row_max_kernel(float* row_max, const T* logits, int Vl,
                                            int n_valid) {
  CR_SHARED(float, warp_buf, ce_detail::kWarps);
  const T* l = logits + (long long)blockIdx.x * Vl;
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < n_valid; i += blockDim.x) mx = fmaxf(mx, to_f32(l[i]));
  mx = ce_detail::block_max(mx, warp_buf);
  if (threadIdx.x == 0) row_max[blockIdx.x] = mx;
}

// sums[n] = sum over real columns of exp(l - row_max[n]); sums[N + n] = the target's logit if
// this shard holds the target (v0 <= target < v0 + n_valid), else 0 (a negative target included).
template <class T>
__global__ void crossentropy_row_sums_kernel(float* sums, const T* logits, const float* row_max,
                                             const int* targets, int N, int Vl, int v0,
                                             int n_valid) {
  CR_SHARED(float, warp_buf, ce_detail::kWarps);
  const int n = blockIdx.x;
  const T* l = logits + (long long)n * Vl;
  const float mx = row_max[n];
  float s = 0.f;
  for (int i = threadIdx.x; i < n_valid; i += blockDim.x) s += expf(to_f32(l[i]) - mx);
  s = ce_detail::block_sum(s, warp_buf);
  if (threadIdx.x == 0) {
    const int tg = targets[n];
    const int y = tg < 0 ? -1 : tg - v0;  // no tg - v0 overflow for a very negative target
    sums[n] = s;
    sums[N + n] = (y >= 0 && y < n_valid) ? to_f32(l[y]) : 0.f;
  }
}

// dlogits = (softmax - onehot(target)) * dloss on real columns, 0 on padding; a row whose target
// is negative (not counted) is all 0. dlogits may alias logits: each element is read and written
// by the same thread, the target's -dloss included.
template <class T>
__global__ void crossentropy_backward_kernel(T* dlogits, const T* logits, const float* row_max,
                                             const float* sums, const int* targets, int Vl, int v0,
                                             int n_valid, float dloss) {
  const int n = blockIdx.x;
  const T* l = logits + (long long)n * Vl;
  T* d = dlogits + (long long)n * Vl;
  const int tg = targets[n];
  const bool counted = tg >= 0;
  const float mx = row_max[n];
  const float scale = counted ? dloss / sums[n] : 0.f;
  const int y = counted ? tg - v0 : -1;  // outside [0, n_valid): not this shard's target
  for (int i = threadIdx.x; i < Vl; i += blockDim.x) {
    float g = 0.f;
    if (counted && i < n_valid) {
      g = expf(to_f32(l[i]) - mx) * scale;
      if (i == y) g -= dloss;
    }
    d[i] = from_f32<T>(g);
  }
}

// Launchers: one block of ce_detail::kBlock threads per row; shapes as in cpu/ops.h.
template <class L, class T>
void run_crossentropy_row_max(const L& launch, float* row_max, const T* logits, int N, int Vl,
                              int n_valid) {
  launch(dim3((unsigned)N), dim3(ce_detail::kBlock), crossentropy_row_max_kernel<T>, row_max,
         logits, Vl, n_valid);
}
template <class L, class T>
void run_crossentropy_row_sums(const L& launch, float* sums, const T* logits,
                               const float* row_max, const int* targets, int N, int Vl, int v0,
                               int n_valid) {
  launch(dim3((unsigned)N), dim3(ce_detail::kBlock), crossentropy_row_sums_kernel<T>, sums,
         logits, row_max, targets, N, Vl, v0, n_valid);
}
template <class L, class T>
void run_crossentropy_backward(const L& launch, T* dlogits, const T* logits,
                               const float* row_max, const float* sums, const int* targets, int N,
                               int Vl, int v0, int n_valid, float dloss) {
  launch(dim3((unsigned)N), dim3(ce_detail::kBlock), crossentropy_backward_kernel<T>, dlogits,
         logits, row_max, sums, targets, Vl, v0, n_valid, dloss);
}

}  // namespace cr::cuda
