// The vocabulary every CUDA kernel body of ours is written in (DESIGN convention 15).
//
// Kernel bodies live in .cuh headers. nvcc compiles them into the CUDA backend (the .cu file of
// each op); the g++ test build includes the same headers with CR_CUDA_EMULATE defined, which
// pulls in tests/emu/cuda_emu.h: every CUDA thread a std::thread, one block at a time,
// __syncthreads a checked barrier, warp shuffles an exchange among 32 threads, shared memory
// race-checked between barriers. So a kernel may use only what both sides define:
//   - threadIdx, blockIdx, blockDim, gridDim, dim3; __global__, __device__, __host__;
//   - __syncthreads(); __shfl_sync / __shfl_xor_sync / __shfl_down_sync / __shfl_up_sync on
//     float, int, unsigned, double with the full mask 0xffffffff and whole warps (blockDim.x a
//     multiple of 32 in every kernel that shuffles);
//   - atomicAdd on float, double, int and unsigned in global memory;
//   - shared memory declared with CR_SHARED(type, name, count) (static size; no extern/dynamic
//     shared memory), indexed as name[i] with 0 <= i < count;
//   - __nv_bfloat16 only through to_f32 / from_f32 below;
//   - math: expf logf tanhf sqrtf rsqrtf fmaxf fminf fabsf sinf cosf powf, INFINITY; integer
//     min/max through imin/imax below.
// Launch geometry is written once: each .cuh has a host template run_<op>(launch, args...)
// that picks grid and block and calls launch(grid, block, kernel, kernel args...). The CUDA
// backend passes CudaLaunch (launch.cuh: kernel<<<grid, block, 0, stream>>> then a checked
// cudaGetLastError); the tests pass cr::emu::Launch, which runs the grid on the CPU and throws
// on a barrier divergence, an early return before a barrier, a shared-memory race, an
// out-of-range shared index or a read of shared memory this block never wrote.
#pragma once

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#define CR_HD __host__ __device__ __forceinline__
#define CR_DEV __device__ __forceinline__
#define CR_SHARED(T, name, count) __shared__ T name[count]
#elif defined(CR_CUDA_EMULATE)
#include "tests/emu/cuda_emu.h"  // test builds only: defines the vocabulary above for g++
#define CR_HD inline
#define CR_DEV inline
#else
#error "cuda_compat.cuh: compile with nvcc, or with CR_CUDA_EMULATE in a test build"
#endif

namespace cr::cuda {

using bf16 = __nv_bfloat16;

// Loads and stores: kernels are templated on the storage type T (float or bf16) and compute in
// float. from_f32<bf16> rounds to nearest even (as the CPU's bf16 conversion does).
CR_HD float to_f32(float x) { return x; }
CR_HD float to_f32(bf16 x) { return __bfloat162float(x); }
template <class T>
CR_HD T from_f32(float x);
template <>
CR_HD float from_f32<float>(float x) { return x; }
template <>
CR_HD bf16 from_f32<bf16>(float x) { return __float2bfloat16(x); }

CR_HD int imin(int a, int b) { return a < b ? a : b; }
CR_HD int imax(int a, int b) { return a > b ? a : b; }
CR_HD long long ceil_div(long long a, long long b) { return (a + b - 1) / b; }

constexpr int kWarpSize = 32;

// Butterfly reductions over the 32 lanes of a warp: every lane gets the result.
CR_DEV float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
CR_DEV float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

}  // namespace cr::cuda
