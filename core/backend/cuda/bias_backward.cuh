// The bias gradient of a linear layer (called by matmul.cu next to the cuBLASLt GEMMs):
//   dbias[o] += sum_n dout[n * ldd + o],  o < OC, n < N;  f32 accumulation, deterministic.
// A block owns a tile of kBiasCols adjacent columns (a warp reads them as one coalesced segment)
// and kBiasLanes warps walk its rows: warp k takes rows k, k + kBiasLanes, ... Each column's lane
// sums are then added in warp order through shared memory. The summation order depends on N
// alone, so no float atomics and no scratch are needed and runs are bit-reproducible.
#pragma once

#include <cstddef>

#include "core/backend/cuda/cuda_compat.cuh"

namespace cr::cuda {

constexpr int kBiasCols = 32;
constexpr int kBiasLanes = 16;
constexpr int kBiasBlock = kBiasCols * kBiasLanes;

template <class T>
__global__ void bias_backward_kernel(float* dbias, const T* dout, int N, int OC, int ldd) {
  CR_SHARED(float, lanes, kBiasBlock);
  const int tx = (int)threadIdx.x % kBiasCols, lane = (int)threadIdx.x / kBiasCols;
  const int o = (int)blockIdx.x * kBiasCols + tx;
  float s = 0.f;
  if (o < OC)
    for (int n = lane; n < N; n += kBiasLanes) s += to_f32(dout[(size_t)n * ldd + o]);
  lanes[threadIdx.x] = s;
  __syncthreads();
  if (lane == 0 && o < OC) {
    float t = 0.f;
    for (int k = 0; k < kBiasLanes; k++) t += lanes[k * kBiasCols + tx];
    dbias[o] += t;
  }
}

// dbias [OC] f32 (accumulated); dout [N rows, ldd apart] of T, ldd >= OC.
// Bytes moved: N*OC*sizeof(T) read, OC*4 read and written.
template <class L, class T>
void run_bias_backward(const L& launch, float* dbias, const T* dout, int N, int OC, int ldd) {
  if (N <= 0 || OC <= 0) return;
  launch(dim3((unsigned)ceil_div(OC, kBiasCols)), dim3(kBiasBlock), bias_backward_kernel<T>, dbias,
         dout, N, OC, ldd);
}

}  // namespace cr::cuda
