// CudaBackend's LayerNorm ops: argument checks (device, dtype, sizes), then the layernorm.cuh
// kernels on the backend's stream. T (f32 or bf16) is read off inp (a, b for the residual form);
// mean, rstd, dweight and dbias are f32.
#include "core/backend/cuda/cuda_backend.h"
#include "core/backend/cuda/launch.cuh"
#include "core/backend/cuda/layernorm.cuh"

namespace cr::cuda {

void CudaBackend::layernorm_forward(TensorView out, TensorView mean, TensorView rstd,
                                    TensorView inp, TensorView weight, TensorView bias, int N,
                                    int C, float eps) {
  const char* op = "layernorm_forward";
  check_rows(op, N, C);
  const DType t = compute_dtype(inp, op, "inp");
  dispatch_float(t, [&](auto tag) {
    using T = decltype(tag);
    run_layernorm_forward(CudaLaunch{stream(), op}, cuda_ptr<T>(out, t, z(N, C), op, "out"),
                          cuda_ptr<float>(mean, DType::F32, N, op, "mean"),
                          cuda_ptr<float>(rstd, DType::F32, N, op, "rstd"),
                          cuda_ptr<const T>(inp, t, z(N, C), op, "inp"),
                          cuda_ptr<const T>(weight, t, C, op, "weight"),
                          cuda_ptr<const T>(bias, t, C, op, "bias"), N, C, eps);
  });
}

void CudaBackend::layernorm_apply(TensorView out, TensorView inp, TensorView mean,
                                  TensorView rstd, TensorView weight, TensorView bias, int N,
                                  int C) {
  const char* op = "layernorm_apply";
  check_rows(op, N, C);
  const DType t = compute_dtype(inp, op, "inp");
  dispatch_float(t, [&](auto tag) {
    using T = decltype(tag);
    run_layernorm_apply(CudaLaunch{stream(), op}, cuda_ptr<T>(out, t, z(N, C), op, "out"),
                        cuda_ptr<const T>(inp, t, z(N, C), op, "inp"),
                        cuda_ptr<const float>(mean, DType::F32, N, op, "mean"),
                        cuda_ptr<const float>(rstd, DType::F32, N, op, "rstd"),
                        cuda_ptr<const T>(weight, t, C, op, "weight"),
                        cuda_ptr<const T>(bias, t, C, op, "bias"), N, C);
  });
}

void CudaBackend::residual_layernorm_forward(TensorView x, TensorView out, TensorView mean,
                                             TensorView rstd, TensorView a, TensorView b,
                                             TensorView weight, TensorView bias, int N, int C,
                                             float eps) {
  const char* op = "residual_layernorm_forward";
  check_rows(op, N, C);
  const DType t = compute_dtype(a, op, "a");
  dispatch_float(t, [&](auto tag) {
    using T = decltype(tag);
    run_residual_layernorm_forward(
        CudaLaunch{stream(), op}, cuda_ptr<T>(x, t, z(N, C), op, "x"),
        cuda_ptr<T>(out, t, z(N, C), op, "out"), cuda_ptr<float>(mean, DType::F32, N, op, "mean"),
        cuda_ptr<float>(rstd, DType::F32, N, op, "rstd"),
        cuda_ptr<const T>(a, t, z(N, C), op, "a"), cuda_ptr<const T>(b, t, z(N, C), op, "b"),
        cuda_ptr<const T>(weight, t, C, op, "weight"), cuda_ptr<const T>(bias, t, C, op, "bias"),
        N, C, eps);
  });
}

void CudaBackend::layernorm_backward(TensorView dinp, TensorView dweight, TensorView dbias,
                                     TensorView dout, TensorView inp, TensorView weight,
                                     TensorView mean, TensorView rstd, int N, int C) {
  const char* op = "layernorm_backward";
  check_rows(op, N, C);
  const DType t = compute_dtype(inp, op, "inp");
  dispatch_float(t, [&](auto tag) {
    using T = decltype(tag);
    T* dx = cuda_ptr<T>(dinp, t, z(N, C), op, "dinp");
    float* dw = cuda_ptr<float>(dweight, DType::F32, C, op, "dweight");
    float* db = cuda_ptr<float>(dbias, DType::F32, C, op, "dbias");
    const T* d = cuda_ptr<const T>(dout, t, z(N, C), op, "dout");
    const T* x = cuda_ptr<const T>(inp, t, z(N, C), op, "inp");
    const T* w = cuda_ptr<const T>(weight, t, C, op, "weight");
    const float* m = cuda_ptr<const float>(mean, DType::F32, N, op, "mean");
    const float* s = cuda_ptr<const float>(rstd, DType::F32, N, op, "rstd");
    if (N == 0) return;
    float* partial =
        static_cast<float*>(scratch(layernorm_backward_scratch_floats(N, C) * sizeof(float)));
    run_layernorm_backward(CudaLaunch{stream(), op}, dx, dw, db, partial, d, x, w, m, s, N, C);
  });
}

}  // namespace cr::cuda
