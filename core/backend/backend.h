// The backend interface: every op the model, the generator, the optimizer and the gradient sync
// need, one name per op, the same semantics on every backend (in the style of ggml's backend
// tables). The CPU backend (core/backend/cpu/cpu_backend.cpp over the ops in cpu/ops.h) is the
// oracle; a GPU backend implements the same table. Adding a backend means implementing this
// class; nothing above it changes (no #ifdef in the model).
//
// Conventions, for every op:
//   - Tensors are TensorViews on this backend's device. Shapes use llm.c's letters: B batch,
//     T time, C channels, N = B*T rows, H query heads, Hkv key/value heads, hs head size,
//     V real vocabulary, Vl a shard's (padded) vocabulary columns. Views are row-major and hold
//     at least the elements the op reads or writes (checked at the entry point); an empty view
//     stands for an optional argument (a bias, wpe).
//   - Parameter gradients (dweight, dbias, dwte, dwpe) are ACCUMULATED (+=), so micro-batches and
//     a tied embedding/LM head add up; *norm_backward accumulates into dinp (the residual stream
//     gradient); every other output is OVERWRITTEN.
//   - Preconditions (dtype, device, sizes) are checked in release builds; violations throw
//     cr::Error naming the op and the argument.
//   - Dtypes (mixed precision, train.dtype): every op computes in fp32 and stores in the
//     tensors' dtypes. T below is the compute dtype, f32 or bf16: activations, their gradients
//     and the weights the forward reads (a bf16 copy of the fp32 master weights) are T. Always
//     f32: parameter gradients (dweight, dbias, dwte, dwpe), the saved statistics (mean, rstd,
//     lse), the cross-entropy row_max and sums, and everything AdamW, sum_squares and scale
//     touch. Token ids and targets are i32. One call uses one T for all its T arguments.
// The exact math of each op is documented beside its CPU implementation (core/backend/cpu/ops.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/tensor/tensor.h"

namespace cr {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual Device device() const = 0;
  // Memory for DeviceBuffers on this backend's device.
  virtual Allocator& allocator() = 0;
  // dst <- src, same dtype and element count; either side may be host memory (Device::CPU).
  virtual void copy(TensorView dst, TensorView src) = 0;
  // dst <- src converted (f32 <-> bf16, round to nearest even; or the same dtype), same device
  // and element count.
  virtual void cast(TensorView dst, TensorView src) = 0;
  // Waits for every op issued so far (a no-op on the CPU).
  virtual void synchronize() {}
  // The device's memory in bytes, for the memory plan checked before step 1 (cudaMemGetInfo on a
  // GPU). {0, 0} means not known (host memory: the CPU backend).
  struct MemoryInfo {
    size_t free_bytes = 0, total_bytes = 0;
  };
  virtual MemoryInfo memory_info() { return {}; }

  // ---- embedding: out[b,t,:] = wte[tokens[b,t] - vocab_start,:] + wpe[t,:] ------------------
  // Vocabulary-parallel: wte holds rows [vocab_start, vocab_start + vocab_count); other tokens
  // contribute 0. wpe may be empty (rotary models, or TP ranks other than 0).
  virtual void embedding_forward(TensorView out, TensorView tokens, TensorView wte, TensorView wpe,
                                 int B, int T, int C, int vocab_start, int vocab_count) = 0;
  virtual void embedding_backward(TensorView dwte, TensorView dwpe, TensorView dout,
                                  TensorView tokens, int B, int T, int C, int vocab_start,
                                  int vocab_count) = 0;

  // ---- LayerNorm (mean, rstd [N] saved) and RMSNorm (rstd [N] saved) -------------------------
  virtual void layernorm_forward(TensorView out, TensorView mean, TensorView rstd, TensorView inp,
                                 TensorView weight, TensorView bias, int N, int C, float eps) = 0;
  // out = layernorm(inp) from the saved statistics (activation recompute: bit-identical).
  virtual void layernorm_apply(TensorView out, TensorView inp, TensorView mean, TensorView rstd,
                               TensorView weight, TensorView bias, int N, int C) = 0;
  // x = a + b (the new residual stream), out = layernorm(x), in one pass.
  virtual void residual_layernorm_forward(TensorView x, TensorView out, TensorView mean,
                                          TensorView rstd, TensorView a, TensorView b,
                                          TensorView weight, TensorView bias, int N, int C,
                                          float eps) = 0;
  virtual void layernorm_backward(TensorView dinp, TensorView dweight, TensorView dbias,
                                  TensorView dout, TensorView inp, TensorView weight,
                                  TensorView mean, TensorView rstd, int N, int C) = 0;
  virtual void rmsnorm_forward(TensorView out, TensorView rstd, TensorView inp, TensorView weight,
                               int N, int C, float eps) = 0;
  virtual void rmsnorm_apply(TensorView out, TensorView inp, TensorView rstd, TensorView weight,
                             int N, int C) = 0;
  virtual void residual_rmsnorm_forward(TensorView x, TensorView out, TensorView rstd,
                                        TensorView a, TensorView b, TensorView weight, int N,
                                        int C, float eps) = 0;
  virtual void rmsnorm_backward(TensorView dinp, TensorView dweight, TensorView dout,
                                TensorView inp, TensorView weight, TensorView rstd, int N,
                                int C) = 0;

  // ---- linear layers: out[N,OC] (rows ldo apart) = inp[N,C] weight[OC,C]^T + bias[OC] -------
  virtual void matmul_forward(TensorView out, TensorView inp, TensorView weight, TensorView bias,
                              int N, int C, int OC, int ldo) = 0;
  // pre = inp weight^T + bias (kept for backward), out = gelu(pre): GPT-2's MLP up-projection.
  // A backend may fuse the two (cuBLASLt's GELU_AUX_BIAS epilogue); this default does not.
  virtual void matmul_gelu_forward(TensorView out, TensorView pre, TensorView inp,
                                   TensorView weight, TensorView bias, int N, int C, int OC) {
    matmul_forward(pre, inp, weight, bias, N, C, OC, OC);
    gelu_forward(out, pre, (size_t)N * OC);
  }
  // dinp = dout weight (overwritten, or added to with accumulate_dinp; may be empty),
  // dweight += dout^T inp, dbias += sum over rows of dout (rows ldd apart).
  virtual void matmul_backward(TensorView dinp, TensorView dweight, TensorView dbias,
                               TensorView dout, TensorView inp, TensorView weight, int N, int C,
                               int OC, int ldd, bool accumulate_dinp) = 0;

  // ---- causal grouped-query attention over qkv [B,T,(H + 2 Hkv) hs] -> out [B,T,H hs] --------
  // lse [B,H,T]: each query's log-sum-exp, all backward needs; no [T,T] matrix is stored.
  // kv_range: empty for causal attention; otherwise int32 [B,T,2] on this backend's device: query
  // t of sequence b attends to the keys [lo, hi] inclusive, 0 <= lo <= t <= hi < T. A contiguous
  // range per query expresses a document mask (lo = where t's document starts) and prefix-LM
  // (hi = the end of t's prompt for a prompt token: keys after the query are visible);
  // core/data/attention_mask.h builds it from the tokens.
  virtual void attention_forward(TensorView out, TensorView lse, TensorView qkv, int B, int T,
                                 int H, int Hkv, int hs, TensorView kv_range) = 0;
  virtual void attention_backward(TensorView dqkv, TensorView dout, TensorView qkv,
                                  TensorView out, TensorView lse, int B, int T, int H, int Hkv,
                                  int hs, TensorView kv_range) = 0;
  // One query q [H hs] against caches [len, Hkv hs] (positions 0..len-1): out [H hs].
  virtual void attention_decode(TensorView out, TensorView q, TensorView kcache,
                                TensorView vcache, int len, int H, int Hkv, int hs) = 0;
  // Decoding B sequences of T new tokens each at positions pos0..pos0+T-1: the query of row
  // r = b T + t (qkv row r, rows ld apart, q its first H hs) attends to positions
  // 0..pos0+t of sequence b's caches (0..pos0+T-1 when bidirectional), out [B T, H hs].
  // kcache/vcache [B, cache_len, Hkv hs]. Each row is attention_decode's; a backend may run the
  // rows in parallel (the CPU does), with the same bits as one at a time.
  virtual void attention_decode_rows(TensorView out, TensorView qkv, TensorView kcache,
                                     TensorView vcache, int B, int T, int pos0, bool bidirectional,
                                     int cache_len, int ld, int H, int Hkv, int hs) {
    const size_t q = (size_t)H * hs, seq = (size_t)cache_len * Hkv * hs;
    for (int b = 0; b < B; b++)
      for (int t = 0; t < T; t++) {
        const size_t r = (size_t)b * T + t;
        attention_decode(out.slice(r * q, q), qkv.slice(r * ld, q), kcache.slice(b * seq, seq),
                         vcache.slice(b * seq, seq), pos0 + (bidirectional ? T : t + 1), H, Hkv, hs);
      }
  }
  // Rotary embedding in place on the first n_heads heads of each row (rows ld apart), positions
  // pos0 + t; rope_backward rotates a gradient back.
  virtual void rope_forward(TensorView x, int B, int T, int ld, int n_heads, int hs, float theta,
                            int pos0) = 0;
  virtual void rope_backward(TensorView dx, int B, int T, int ld, int n_heads, int hs,
                             float theta, int pos0) = 0;

  // ---- element-wise ---------------------------------------------------------------------------
  virtual void gelu_forward(TensorView out, TensorView inp, size_t n) = 0;  // tanh approximation
  virtual void gelu_backward(TensorView dinp, TensorView inp, TensorView dout, size_t n) = 0;
  // inp rows [gate | up] of F each: out[N,F] = silu(gate) * up; dinp [N,2F] overwritten.
  virtual void swiglu_forward(TensorView out, TensorView inp, int N, int F) = 0;
  virtual void swiglu_backward(TensorView dinp, TensorView inp, TensorView dout, int N, int F) = 0;
  virtual void residual_forward(TensorView out, TensorView a, TensorView b, size_t n) = 0;

  // ---- vocabulary-parallel softmax cross-entropy (see cpu/ops.h) -----------------------------
  // A shard holds logit columns [v0, v0 + Vl) of the padded vocabulary, the first n_valid real.
  // A negative target is not counted (PyTorch's ignore_index): its target logit is 0 and its
  // gradient row is zero.
  virtual void crossentropy_row_max(TensorView row_max, TensorView logits, int N, int Vl,
                                    int n_valid) = 0;
  virtual void crossentropy_row_sums(TensorView sums, TensorView logits, TensorView row_max,
                                     TensorView targets, int N, int Vl, int v0, int n_valid) = 0;
  virtual void crossentropy_backward(TensorView dlogits, TensorView logits, TensorView row_max,
                                     TensorView sums, TensorView targets, int N, int Vl, int v0,
                                     int n_valid, float dloss) = 0;

  // ---- optimizer and gradient norm -----------------------------------------------------------
  // One AdamW step (PyTorch semantics) over segments [offset, offset + n) of flat buffers, each
  // with its own weight decay; step counts from 1.
  struct AdamWSegment {
    size_t offset, n;
    float weight_decay;
  };
  virtual void adamw_step(TensorView params, TensorView grads, TensorView m, TensorView v,
                          const AdamWSegment* segs, size_t nsegs, float lr, float beta1,
                          float beta2, float eps, int step) = 0;
  // sum(x^2), accumulated in double in a fixed order; the result is returned to the host.
  virtual double sum_squares(TensorView x) = 0;
  virtual void scale(TensorView x, float s) = 0;  // x *= s
};

// ---- the backends ------------------------------------------------------------------------------
// The CPU backend (fp32, OpenMP, oneDNN GEMM): a process-wide instance.
Backend& cpu_backend();
// Whether this binary has the CUDA backend and the process sees at least one GPU (never throws).
bool cuda_available();
// How many GPUs this process sees (0 without a driver or without the CUDA backend).
int cuda_device_count();
// The CUDA backend on GPU `device` (one per process: the first call picks the device, a later
// call with another device throws). Throws cr::Error naming the reason when this binary was
// built without CUDA or no GPU is usable.
Backend& cuda_backend(int device);

}  // namespace cr
