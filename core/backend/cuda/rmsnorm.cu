// CudaBackend's RMSNorm ops: argument checks (device, dtype, sizes), then the rmsnorm.cuh
// kernels on the backend's stream. T (f32 or bf16) is read off inp (a for the residual form);
// rstd and dweight are f32.
#include "core/backend/cuda/cuda_backend.h"
#include "core/backend/cuda/launch.cuh"
#include "core/backend/cuda/rmsnorm.cuh"

namespace cr::cuda {

void CudaBackend::rmsnorm_forward(TensorView out, TensorView rstd, TensorView inp,
                                  TensorView weight, int N, int C, float eps) {
  const char* op = "rmsnorm_forward";
  check_rows(op, N, C);
  const DType t = compute_dtype(inp, op, "inp");
  dispatch_float(t, [&](auto tag) {
    using T = decltype(tag);
    run_rmsnorm_forward(CudaLaunch{stream(), op}, cuda_ptr<T>(out, t, z(N, C), op, "out"),
                        cuda_ptr<float>(rstd, DType::F32, N, op, "rstd"),
                        cuda_ptr<const T>(inp, t, z(N, C), op, "inp"),
                        cuda_ptr<const T>(weight, t, C, op, "weight"), N, C, eps);
  });
}

void CudaBackend::rmsnorm_apply(TensorView out, TensorView inp, TensorView rstd, TensorView weight,
                                int N, int C) {
  const char* op = "rmsnorm_apply";
  check_rows(op, N, C);
  const DType t = compute_dtype(inp, op, "inp");
  dispatch_float(t, [&](auto tag) {
    using T = decltype(tag);
    run_rmsnorm_apply(CudaLaunch{stream(), op}, cuda_ptr<T>(out, t, z(N, C), op, "out"),
                      cuda_ptr<const T>(inp, t, z(N, C), op, "inp"),
                      cuda_ptr<const float>(rstd, DType::F32, N, op, "rstd"),
                      cuda_ptr<const T>(weight, t, C, op, "weight"), N, C);
  });
}

void CudaBackend::residual_rmsnorm_forward(TensorView x, TensorView out, TensorView rstd,
                                           TensorView a, TensorView b, TensorView weight, int N,
                                           int C, float eps) {
  const char* op = "residual_rmsnorm_forward";
  check_rows(op, N, C);
  const DType t = compute_dtype(a, op, "a");
  dispatch_float(t, [&](auto tag) {
    using T = decltype(tag);
    run_residual_rmsnorm_forward(
        CudaLaunch{stream(), op}, cuda_ptr<T>(x, t, z(N, C), op, "x"),
        cuda_ptr<T>(out, t, z(N, C), op, "out"), cuda_ptr<float>(rstd, DType::F32, N, op, "rstd"),
        cuda_ptr<const T>(a, t, z(N, C), op, "a"), cuda_ptr<const T>(b, t, z(N, C), op, "b"),
        cuda_ptr<const T>(weight, t, C, op, "weight"), N, C, eps);
  });
}

void CudaBackend::rmsnorm_backward(TensorView dinp, TensorView dweight, TensorView dout,
                                   TensorView inp, TensorView weight, TensorView rstd, int N,
                                   int C) {
  const char* op = "rmsnorm_backward";
  check_rows(op, N, C);
  const DType t = compute_dtype(inp, op, "inp");
  dispatch_float(t, [&](auto tag) {
    using T = decltype(tag);
    T* dx = cuda_ptr<T>(dinp, t, z(N, C), op, "dinp");
    float* dw = cuda_ptr<float>(dweight, DType::F32, C, op, "dweight");
    const T* d = cuda_ptr<const T>(dout, t, z(N, C), op, "dout");
    const T* x = cuda_ptr<const T>(inp, t, z(N, C), op, "inp");
    const T* w = cuda_ptr<const T>(weight, t, C, op, "weight");
    const float* s = cuda_ptr<const float>(rstd, DType::F32, N, op, "rstd");
    if (N == 0) return;
    float* partial =
        static_cast<float*>(scratch(rmsnorm_backward_scratch_floats(N, C) * sizeof(float)));
    run_rmsnorm_backward(CudaLaunch{stream(), op}, dx, dw, partial, d, x, w, s, N, C);
  });
}

}  // namespace cr::cuda
