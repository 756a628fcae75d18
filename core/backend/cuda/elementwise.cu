// CudaBackend's element-wise ops: argument checks, then the elementwise.cuh kernels on the
// backend's stream. One compute dtype T (f32 or bf16) per call, read off the input.
#include "core/backend/cuda/cuda_backend.h"
#include "core/backend/cuda/elementwise.cuh"
#include "core/backend/cuda/launch.cuh"

namespace cr::cuda {

namespace {

void check_swiglu_rows(const char* op, int N, int F) {
  CR_CHECK(N >= 0 && F >= 0, "{}: N {} F {}", op, N, F);
}

}  // namespace

void CudaBackend::gelu_forward(TensorView out, TensorView inp, size_t n) {
  const char* op = "gelu_forward";
  const DType t = compute_dtype(inp, op, "inp");
  dispatch_float(t, [&](auto tag) {
    using T = decltype(tag);
    run_gelu_forward(CudaLaunch{stream(), op}, cuda_ptr<T>(out, t, n, op, "out"),
                     cuda_ptr<const T>(inp, t, n, op, "inp"), n);
  });
}

void CudaBackend::gelu_backward(TensorView dinp, TensorView inp, TensorView dout, size_t n) {
  const char* op = "gelu_backward";
  const DType t = compute_dtype(inp, op, "inp");
  dispatch_float(t, [&](auto tag) {
    using T = decltype(tag);
    run_gelu_backward(CudaLaunch{stream(), op}, cuda_ptr<T>(dinp, t, n, op, "dinp"),
                      cuda_ptr<const T>(inp, t, n, op, "inp"),
                      cuda_ptr<const T>(dout, t, n, op, "dout"), n);
  });
}

void CudaBackend::swiglu_forward(TensorView out, TensorView inp, int N, int F) {
  const char* op = "swiglu_forward";
  check_swiglu_rows(op, N, F);
  const DType t = compute_dtype(inp, op, "inp");
  dispatch_float(t, [&](auto tag) {
    using T = decltype(tag);
    run_swiglu_forward(CudaLaunch{stream(), op}, cuda_ptr<T>(out, t, z(N, F), op, "out"),
                       cuda_ptr<const T>(inp, t, z(N, 2 * F), op, "inp"), N, F);
  });
}

void CudaBackend::swiglu_backward(TensorView dinp, TensorView inp, TensorView dout, int N, int F) {
  const char* op = "swiglu_backward";
  check_swiglu_rows(op, N, F);
  const DType t = compute_dtype(inp, op, "inp");
  dispatch_float(t, [&](auto tag) {
    using T = decltype(tag);
    run_swiglu_backward(CudaLaunch{stream(), op}, cuda_ptr<T>(dinp, t, z(N, 2 * F), op, "dinp"),
                        cuda_ptr<const T>(inp, t, z(N, 2 * F), op, "inp"),
                        cuda_ptr<const T>(dout, t, z(N, F), op, "dout"), N, F);
  });
}

void CudaBackend::residual_forward(TensorView out, TensorView a, TensorView b, size_t n) {
  const char* op = "residual_forward";
  const DType t = compute_dtype(a, op, "a");
  dispatch_float(t, [&](auto tag) {
    using T = decltype(tag);
    run_residual_forward(CudaLaunch{stream(), op}, cuda_ptr<T>(out, t, n, op, "out"),
                         cuda_ptr<const T>(a, t, n, op, "a"), cuda_ptr<const T>(b, t, n, op, "b"),
                         n);
  });
}

// x *= s over the whole view (f32 gradients in the optimizer path; bf16 works too).
void CudaBackend::scale(TensorView x, float s) {
  const char* op = "scale";
  const DType t = compute_dtype(x, op, "x");
  const size_t n = x.numel();
  dispatch_float(t, [&](auto tag) {
    using T = decltype(tag);
    run_scale(CudaLaunch{stream(), op}, cuda_ptr<T>(x, t, n, op, "x"), n, s);
  });
}

}  // namespace cr::cuda
