// The CUDA backend: the Backend table (core/backend/backend.h) on one GPU, one stream.
//
// Each op is implemented in its own .cu file (DESIGN convention 2): the file holds the
// CudaBackend method, which checks its arguments (device, dtype, sizes: cuda_args below) and
// launches the kernel body from the op's .cuh header through CudaLaunch (launch.cuh). GEMMs go
// through cuBLASLt (matmul.cu), attention through cuDNN's fused SDPA with our own kernel as the
// fallback and oracle (attention.cu). Every op is issued on stream(); an op returns before the
// GPU finishes, except sum_squares (which returns a number) and copy to or from host memory.
// This header is for the backend's own .cu files; the rest of chainrule sees only Backend.
#pragma once

#include <cuda_runtime.h>

#include <memory>

#include "core/backend/backend.h"

namespace cr::cuda {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device);  // cuda_backend.cu
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  const char* name() const override { return "cuda"; }
  Device device() const override { return Device::CUDA; }
  int device_index() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  Allocator& allocator() override;  // the caching allocator (allocator.cu)
  // A scratch allocation valid until the next scratch() call on this backend (stream-ordered
  // reuse: the ops run in order on one stream). Grows as needed.
  void* scratch(size_t bytes);

  // cuda_backend.cu
  void copy(TensorView dst, TensorView src) override;
  void synchronize() override;
  MemoryInfo memory_info() override;
  // cast.cu
  void cast(TensorView dst, TensorView src) override;

  // embedding.cu
  void embedding_forward(TensorView out, TensorView tokens, TensorView wte, TensorView wpe, int B,
                         int T, int C, int vocab_start, int vocab_count) override;
  void embedding_backward(TensorView dwte, TensorView dwpe, TensorView dout, TensorView tokens,
                          int B, int T, int C, int vocab_start, int vocab_count) override;
  // layernorm.cu
  void layernorm_forward(TensorView out, TensorView mean, TensorView rstd, TensorView inp,
                         TensorView weight, TensorView bias, int N, int C, float eps) override;
  void layernorm_apply(TensorView out, TensorView inp, TensorView mean, TensorView rstd,
                       TensorView weight, TensorView bias, int N, int C) override;
  void residual_layernorm_forward(TensorView x, TensorView out, TensorView mean, TensorView rstd,
                                  TensorView a, TensorView b, TensorView weight, TensorView bias,
                                  int N, int C, float eps) override;
  void layernorm_backward(TensorView dinp, TensorView dweight, TensorView dbias, TensorView dout,
                          TensorView inp, TensorView weight, TensorView mean, TensorView rstd,
                          int N, int C) override;
  // rmsnorm.cu
  void rmsnorm_forward(TensorView out, TensorView rstd, TensorView inp, TensorView weight, int N,
                       int C, float eps) override;
  void rmsnorm_apply(TensorView out, TensorView inp, TensorView rstd, TensorView weight, int N,
                     int C) override;
  void residual_rmsnorm_forward(TensorView x, TensorView out, TensorView rstd, TensorView a,
                                TensorView b, TensorView weight, int N, int C, float eps) override;
  void rmsnorm_backward(TensorView dinp, TensorView dweight, TensorView dout, TensorView inp,
                        TensorView weight, TensorView rstd, int N, int C) override;
  // matmul.cu (cuBLASLt)
  void matmul_forward(TensorView out, TensorView inp, TensorView weight, TensorView bias, int N,
                      int C, int OC, int ldo) override;
  void matmul_gelu_forward(TensorView out, TensorView pre, TensorView inp, TensorView weight,
                           TensorView bias, int N, int C, int OC) override;
  void matmul_backward(TensorView dinp, TensorView dweight, TensorView dbias, TensorView dout,
                       TensorView inp, TensorView weight, int N, int C, int OC, int ldd,
                       bool accumulate_dinp) override;
  // attention.cu (cuDNN SDPA; our attention.cuh kernels as fallback)
  void attention_forward(TensorView out, TensorView lse, TensorView qkv, int B, int T, int H,
                         int Hkv, int hs, TensorView kv_range) override;
  void attention_backward(TensorView dqkv, TensorView dout, TensorView qkv, TensorView out,
                          TensorView lse, int B, int T, int H, int Hkv, int hs,
                          TensorView kv_range) override;
  void attention_decode(TensorView out, TensorView q, TensorView kcache, TensorView vcache,
                        int len, int H, int Hkv, int hs) override;
  // Which implementation attention_forward/_backward run (decode is always ours). Auto: cuDNN
  // for causal bf16 calls where this build has the frontend and cuDNN supports the call, else
  // ours (one warning line on a run-time fallback; a kv_range always runs ours, silently);
  // Cudnn: cuDNN or throw (a kv_range throws: our SDPA graphs have no per-query key ranges);
  // Ours: attention.cuh always.
  // GPU tests force each to compare them.
  enum class AttentionImpl { Auto, Cudnn, Ours };
  void set_attention_impl(AttentionImpl impl);
  // rope.cu
  void rope_forward(TensorView x, int B, int T, int ld, int n_heads, int hs, float theta,
                    int pos0) override;
  void rope_backward(TensorView dx, int B, int T, int ld, int n_heads, int hs, float theta,
                     int pos0) override;
  // elementwise.cu
  void gelu_forward(TensorView out, TensorView inp, size_t n) override;
  void gelu_backward(TensorView dinp, TensorView inp, TensorView dout, size_t n) override;
  void swiglu_forward(TensorView out, TensorView inp, int N, int F) override;
  void swiglu_backward(TensorView dinp, TensorView inp, TensorView dout, int N, int F) override;
  void residual_forward(TensorView out, TensorView a, TensorView b, size_t n) override;
  void scale(TensorView x, float s) override;
  // crossentropy.cu
  void crossentropy_row_max(TensorView row_max, TensorView logits, int N, int Vl,
                            int n_valid) override;
  void crossentropy_row_sums(TensorView sums, TensorView logits, TensorView row_max,
                             TensorView targets, int N, int Vl, int v0, int n_valid) override;
  void crossentropy_backward(TensorView dlogits, TensorView logits, TensorView row_max,
                             TensorView sums, TensorView targets, int N, int Vl, int v0,
                             int n_valid, float dloss) override;
  // adamw.cu (adamw_step, sum_squares)
  void adamw_step(TensorView params, TensorView grads, TensorView m, TensorView v,
                  const AdamWSegment* segs, size_t nsegs, float lr, float beta1, float beta2,
                  float eps, int step) override;
  double sum_squares(TensorView x) override;

  // Library state, defined in the files that use it (pimpl: this header needs neither cuBLASLt
  // nor cuDNN headers).
  struct Blas;  // matmul.cu: cuBLASLt handle, workspace, cached matmul descriptors
  struct Dnn;   // attention.cu: cuDNN handle, cached SDPA graphs
  struct BlasDeleter { void operator()(Blas*) const; };
  struct DnnDeleter { void operator()(Dnn*) const; };
  Blas& blas();
  Dnn& dnn();

 private:
  int device_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Allocator> allocator_;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
  std::unique_ptr<Blas, BlasDeleter> blas_;
  std::unique_ptr<Dnn, DnnDeleter> dnn_;
  AttentionImpl attention_impl_ = AttentionImpl::Auto;
};

// Argument checks for the op files, kept in release builds (DESIGN convention 5): the view is on
// the GPU, has dtype `want` and holds at least `need` elements; an empty view is allowed only
// where need == 0 (an optional argument), and then nullptr is returned.
void* cuda_arg(const TensorView& v, DType want, size_t need, const char* op, const char* arg);
template <class P>
P* cuda_ptr(const TensorView& v, DType want, size_t need, const char* op, const char* arg) {
  return static_cast<P*>(cuda_arg(v, want, need, op, arg));
}
// The compute dtype T of a call (f32 or bf16), read off `v`.
DType compute_dtype(const TensorView& v, const char* op, const char* arg);
// a x b elements from int dimensions, computed in size_t (no int overflow).
inline size_t z(int a, int b) { return (size_t)a * (size_t)b; }
// The row ops' shape check: N >= 0 rows of C > 0 channels.
inline void check_rows(const char* op, int N, int C) {
  CR_CHECK(N >= 0 && C > 0, "{}: N {} C {}", op, N, C);
}

}  // namespace cr::cuda
