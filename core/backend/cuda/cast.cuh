// dtype conversion on the device (the CUDA side of CpuBackend::cast): f32 -> bf16 rounds to
// nearest even (as core/tensor/bf16.h does), bf16 -> f32 is exact, and a same-dtype "cast" is a
// copy (exact through fp32 for both float types). Grid-stride over the flat index.
#pragma once

#include <cstddef>

#include "core/backend/cuda/cuda_compat.cuh"

namespace cr::cuda {

constexpr int kCastBlock = 256;
constexpr long long kCastMaxBlocks = 1 << 16;

template <class D, class S>
__global__ void cast_kernel(D* dst, const S* src, size_t n) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = from_f32<D>(to_f32(src[i]));
}

// dst[i] = src[i] converted, i < n. Bytes moved: n*sizeof(S) read, n*sizeof(D) written.
template <class L, class D, class S>
void run_cast(const L& launch, D* dst, const S* src, size_t n) {
  const long long blocks = ceil_div((long long)n, kCastBlock);
  launch(dim3((unsigned)(blocks < kCastMaxBlocks ? blocks : kCastMaxBlocks)), dim3(kCastBlock),
         cast_kernel<D, S>, dst, src, n);
}

}  // namespace cr::cuda
