// CudaBackend::cast: dst <- src converted between f32 and bf16 (round to nearest even), or copied
// when the dtypes agree (cudaMemcpyAsync, device to device); both on this GPU, same element count.
#include "core/backend/cuda/cast.cuh"
#include "core/backend/cuda/cuda_backend.h"
#include "core/backend/cuda/launch.cuh"

namespace cr::cuda {

void CudaBackend::cast(TensorView dst, TensorView src) {
  const char* op = "cast";
  const size_t n = src.numel();
  CR_CHECK(dst.numel() == n, "{}: dst has {} elements, src {}", op, dst.numel(), n);
  const DType td = compute_dtype(dst, op, "dst"), ts = compute_dtype(src, op, "src");
  void* d = cuda_arg(dst, td, n, op, "dst");
  const void* s = cuda_arg(src, ts, n, op, "src");
  if (n == 0) return;
  if (td == ts) {
    CR_CUDA_CHECK(cudaMemcpyAsync(d, s, n * dtype_size(td), cudaMemcpyDeviceToDevice, stream()));
    return;
  }
  const CudaLaunch launch{stream(), op};
  if (td == DType::BF16) {
    run_cast(launch, static_cast<bf16*>(d), static_cast<const float*>(s), n);
  } else {
    run_cast(launch, static_cast<float*>(d), static_cast<const bf16*>(s), n);
  }
}

}  // namespace cr::cuda
