// CudaBackend's vocabulary-parallel cross-entropy pieces: argument checks, then the
// crossentropy.cuh kernels on the backend's stream. Logits/dlogits in the compute dtype T;
// row_max and sums f32; targets i32.
#include "core/backend/cuda/crossentropy.cuh"
#include "core/backend/cuda/cuda_backend.h"
#include "core/backend/cuda/launch.cuh"

namespace cr::cuda {

namespace {

void check_shape(const char* op, int N, int Vl, int n_valid) {
  CR_CHECK(N >= 0 && Vl >= 0 && n_valid >= 0 && n_valid <= Vl, "{}: N {} Vl {} n_valid {}", op, N,
           Vl, n_valid);
}

}  // namespace

void CudaBackend::crossentropy_row_max(TensorView row_max, TensorView logits, int N, int Vl,
                                       int n_valid) {
  const char* op = "crossentropy_row_max";
  check_shape(op, N, Vl, n_valid);
  const DType t = compute_dtype(logits, op, "logits");
  const void* l = cuda_arg(logits, t, (size_t)N * Vl, op, "logits");
  float* mx = cuda_ptr<float>(row_max, DType::F32, N, op, "row_max");
  dispatch_float(t, [&](auto tag) {
    using S = decltype(tag);
    run_crossentropy_row_max(CudaLaunch{stream(), op}, mx, static_cast<const S*>(l), N, Vl,
                             n_valid);
  });
}

void CudaBackend::crossentropy_row_sums(TensorView sums, TensorView logits, TensorView row_max,
                                        TensorView targets, int N, int Vl, int v0, int n_valid) {
  const char* op = "crossentropy_row_sums";
  check_shape(op, N, Vl, n_valid);
  const DType t = compute_dtype(logits, op, "logits");
  const void* l = cuda_arg(logits, t, (size_t)N * Vl, op, "logits");
  float* s = cuda_ptr<float>(sums, DType::F32, 2 * (size_t)N, op, "sums");
  const float* mx = cuda_ptr<float>(row_max, DType::F32, N, op, "row_max");
  const int* y = cuda_ptr<int>(targets, DType::I32, N, op, "targets");
  dispatch_float(t, [&](auto tag) {
    using S = decltype(tag);
    run_crossentropy_row_sums(CudaLaunch{stream(), op}, s, static_cast<const S*>(l), mx, y, N, Vl,
                              v0, n_valid);
  });
}

void CudaBackend::crossentropy_backward(TensorView dlogits, TensorView logits, TensorView row_max,
                                        TensorView sums, TensorView targets, int N, int Vl, int v0,
                                        int n_valid, float dloss) {
  const char* op = "crossentropy_backward";
  check_shape(op, N, Vl, n_valid);
  const DType t = compute_dtype(logits, op, "logits");
  const void* l = cuda_arg(logits, t, (size_t)N * Vl, op, "logits");
  void* d = cuda_arg(dlogits, t, (size_t)N * Vl, op, "dlogits");  // may alias logits
  const float* mx = cuda_ptr<float>(row_max, DType::F32, N, op, "row_max");
  const float* s = cuda_ptr<float>(sums, DType::F32, 2 * (size_t)N, op, "sums");
  const int* y = cuda_ptr<int>(targets, DType::I32, N, op, "targets");
  dispatch_float(t, [&](auto tag) {
    using S = decltype(tag);
    run_crossentropy_backward(CudaLaunch{stream(), op}, static_cast<S*>(d),
                              static_cast<const S*>(l), mx, s, y, N, Vl, v0, n_valid, dloss);
  });
}

}  // namespace cr::cuda
