// CudaBackend::rope_forward / rope_backward: argument checks, then the rope.cuh kernel on the
// backend's stream (in place, compute dtype T of x).
#include "core/backend/cuda/cuda_backend.h"
#include "core/backend/cuda/launch.cuh"
#include "core/backend/cuda/rope.cuh"

namespace cr::cuda {

namespace {

// sign +1 rotates forward, -1 applies the inverse rotation to a gradient.
void rope(CudaBackend& be, const char* op, TensorView x, int B, int T, int ld, int n_heads, int hs,
          float theta, int pos0, float sign) {
  CR_CHECK(B >= 0 && T >= 0 && n_heads >= 0 && hs >= 0, "{}: B {} T {} n_heads {} hs {}", op, B,
           T, n_heads, hs);
  CR_CHECK(hs % 2 == 0 && hs / 2 <= kRopeMaxHalf && (long long)n_heads * hs <= ld,
           "{}: hs {} (even, at most {}) n_heads {} ld {}", op, hs, 2 * kRopeMaxHalf, n_heads, ld);
  const DType t = compute_dtype(x, op, "x");
  void* p = cuda_arg(x, t, (size_t)B * T * ld, op, "x");
  dispatch_float(t, [&](auto tag) {
    using S = decltype(tag);
    run_rope(CudaLaunch{be.stream(), op}, static_cast<S*>(p), B, T, ld, n_heads, hs, theta, pos0,
             sign);
  });
}

}  // namespace

void CudaBackend::rope_forward(TensorView x, int B, int T, int ld, int n_heads, int hs,
                               float theta, int pos0) {
  rope(*this, "rope_forward", x, B, T, ld, n_heads, hs, theta, pos0, 1.f);
}

void CudaBackend::rope_backward(TensorView dx, int B, int T, int ld, int n_heads, int hs,
                                float theta, int pos0) {
  rope(*this, "rope_backward", dx, B, T, ld, n_heads, hs, theta, pos0, -1.f);
}

}  // namespace cr::cuda
