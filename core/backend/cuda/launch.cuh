// The CUDA side of the launch contract in cuda_compat.cuh, and dtype dispatch for the op files.
// nvcc only (the tests use cr::emu::Launch instead of CudaLaunch).
#pragma once

#include <utility>

#include "core/backend/cuda/cuda_check.h"
#include "core/backend/cuda/cuda_compat.cuh"
#include "core/tensor/tensor.h"

namespace cr::cuda {

// launch(grid, block, kernel, args...): kernel<<<grid, block, 0, stream>>>(args...), then the
// launch error checked (CR_CUDA_CHECK_LAUNCH names `op`). An empty grid launches nothing.
struct CudaLaunch {
  cudaStream_t stream;
  const char* op;
  template <class... KArgs, class... Args>
  void operator()(dim3 grid, dim3 block, void (*kernel)(KArgs...), Args&&... args) const {
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
    kernel<<<grid, block, 0, stream>>>(std::forward<Args>(args)...);
    CR_CUDA_CHECK_LAUNCH(op);
  }
};

// Calls f(float{}) or f(bf16{}) for a compute dtype: dispatch_float(t, [&](auto tag) {
// using T = decltype(tag); ... }).
template <class F>
void dispatch_float(DType t, F&& f) {
  if (t == DType::F32) {
    f(float{});
  } else if (t == DType::BF16) {
    f(bf16{});
  } else {
    CR_THROW("a {} tensor where f32 or bf16 was expected", dtype_name(t));
  }
}

}  // namespace cr::cuda
