// The CPU backend: every op the model needs, one file each, fp32, row-major.
//
// Shapes use llm.c's letters: B batch, T time, C channels, H heads, V vocabulary (real),
// Vp vocabulary padded, N = B*T rows. Gradient conventions, chosen so that backward can run
// in place over one residual-stream gradient buffer:
//   - parameter gradients (dweight, dbias, dwte, dwpe) are ACCUMULATED (+=), so micro-batches
//     and the tied embedding/LM head add up without extra buffers;
//   - layernorm_backward accumulates into dinp (it is the residual branch's entry point);
//   - every other activation gradient is OVERWRITTEN.
// The CPU backend is the oracle for every other backend: keep it simple and exact.
#pragma once

#include <cstddef>
#include <cstdint>
#include <climits>

namespace cr::cpu {

// out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:]
// Vocabulary-parallel form: wte holds rows [vocab_start, vocab_start + vocab_count) only; a token
// outside that range contributes zero (its owner adds it in the all-reduce). wpe may be null.
void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                       int B, int T, int C, int vocab_start = 0, int vocab_count = INT32_MAX);
// dwte[tokens[b,t] - vocab_start,:] += dout[b,t,:] (tokens in range);  dwpe[t,:] += dout[b,t,:]
// (dwpe may be null)
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                        int B, int T, int C, int vocab_start = 0, int vocab_count = INT32_MAX);

// out = (inp - mean) * rstd * weight + bias, per row of C; saves mean and rstd for backward.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int N, int C, float eps);
// The residual add fused with the LayerNorm that reads it: x = a + b (the new residual stream,
// kept), out = layernorm(x). One pass over the rows instead of two.
// out = (inp - mean) * rstd * weight + bias with the mean and rstd a forward pass saved: rebuilds
// that pass's output bit for bit (activation recompute).
void layernorm_apply(float* out, const float* inp, const float* mean, const float* rstd,
                     const float* weight, const float* bias, int N, int C);
void residual_layernorm_forward(float* x, float* out, float* mean, float* rstd, const float* a,
                                const float* b, const float* weight, const float* bias, int N,
                                int C, float eps);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int N, int C);

// out[N,OC] = inp[N,C] @ weight[OC,C]^T + bias[OC]   (bias may be null). out's rows are ldo
// apart (ldo >= OC), so several projections can fill the column blocks of one buffer.
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                    int C, int OC, int ldo = 0);
// dinp = dout @ weight (overwritten, or added to when accumulate_dinp; may be null),
// dweight += dout^T @ inp, dbias += sum(dout). dout's rows are ldd apart (ldd >= OC; 0: OC).
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int N, int C, int OC, int ldd = 0,
                     bool accumulate_dinp = false);

// RMSNorm: out = inp * rstd * weight, rstd = 1/sqrt(mean(inp^2) + eps); saves rstd [N].
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                     float eps);
// Rebuilds a forward's output from its saved rstd (recompute).
void rmsnorm_apply(float* out, const float* inp, const float* rstd, const float* weight, int N,
                   int C);
// x = a + b (kept), out = rmsnorm(x): the residual add fused with the norm that reads it.
void residual_rmsnorm_forward(float* x, float* out, float* rstd, const float* a, const float* b,
                              const float* weight, int N, int C, float eps);
// Accumulates into dinp and dweight (like layernorm_backward).
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int N, int C);

// Rotary position embedding, in place, Hugging Face's rotate-half convention (rope.cpp): rows
// [B*T] ld floats apart, each holding n_heads heads of hs channels at its start; row t of each
// sequence is position pos0 + t. rope_backward applies the inverse rotation to a gradient.
void rope_forward(float* x, int B, int T, int ld, int n_heads, int hs, float theta, int pos0);
void rope_backward(float* dx, int B, int T, int ld, int n_heads, int hs, float theta, int pos0);

// SwiGLU: inp rows [gate | up] (2F), out[N,F] = silu(gate) * up. dinp [N,2F] is overwritten.
void swiglu_forward(float* out, const float* inp, int N, int F);
void swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int F);

// Causal self-attention with grouped-query heads, softmax(q k^T / sqrt(hs)) v over s <= t.
// qkv is [B,T,(H + 2 Hkv) hs] laid out q|k|v: H query heads, then Hkv key heads, then Hkv value
// heads, each of hs contiguous channels; query head h reads kv head h / (H / Hkv) (no copy of
// K/V per query head). out is [B,T,H hs]. Flash-style (see attention.cpp): lse [B,H,T] receives
// each query's log-sum-exp of its scaled scores, which is all backward needs besides q, k, v and
// out; no [T,T] matrix is stored. Multi-head attention is Hkv = H.
// kv_range (optional) [B,T,2]: query t of sequence b attends to keys [lo, hi] inclusive instead
// of [0, t], with 0 <= lo <= t <= hi < T (document masks, prefix-LM; see backend.h).
void attention_forward(float* out, float* lse, const float* qkv, int B, int T, int H, int Hkv,
                       int hs, const int32_t* kv_range = nullptr);
// dqkv (same layout as qkv) is overwritten.
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                        const float* lse, int B, int T, int H, int Hkv, int hs,
                        const int32_t* kv_range = nullptr);
// Multi-head attention over qkv [B,T,3C] (Hkv = H, hs = C / H).
inline void attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C, int H) {
  attention_forward(out, lse, qkv, B, T, H, H, C / H);
}
inline void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                               const float* lse, int B, int T, int C, int H) {
  attention_backward(dqkv, dout, qkv, out, lse, B, T, H, H, C / H);
}

// GELU, tanh approximation (GPT-2's "gelu_new").
void gelu_forward(float* out, const float* inp, size_t n);
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n);

// out = a + b
void residual_forward(float* out, const float* a, const float* b, size_t n);

// Fused softmax + cross-entropy over the first V of Vp logits per row (the padding columns are
// masked out: they get probability 0 and gradient 0). losses[N] receives -log p[target].
// When dlogits is non-null it receives (softmax - onehot) * dloss; it may alias logits. A
// negative target is not counted: loss 0, gradient row 0.
void crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                   const int32_t* targets, int N, int V, int Vp, float dloss);

// The same loss split into the pieces a vocabulary-parallel shard computes. A shard holds logit
// columns [v0, v0 + Vl) of the padded vocabulary, of which the first n_valid are real tokens.
//   loss = log(sum_v exp(l_v - m)) + m - l_target,   m = max_v l_v
// needs one all-reduce(max) of row_max and one all-reduce(sum) of sums across the shards.
// row_max[N] = max over this shard's real columns (-inf if it has none)
void crossentropy_row_max(float* row_max, const float* logits, int N, int Vl, int n_valid);
// sums[0:N] = sum exp(l - row_max) over real columns; sums[N:2N] = the target's logit if this
// shard holds it, else 0.
void crossentropy_row_sums(float* sums, const float* logits, const float* row_max,
                           const int32_t* targets, int N, int Vl, int v0, int n_valid);
// dlogits = (softmax - onehot) * dloss on real columns, 0 on padding; may alias logits. A row
// whose target is negative is not counted (ignore_index): its dlogits row is 0.
void crossentropy_backward(float* dlogits, const float* logits, const float* row_max,
                           const float* sums, const int32_t* targets, int N, int Vl, int v0,
                           int n_valid, float dloss);

// One AdamW step over a contiguous range, PyTorch semantics: decoupled decay p -= lr*wd*p,
// bias-corrected moments, eps added after the square root. step counts from 1.
void adamw_step(float* params, const float* grads, float* m, float* v, size_t n, float lr,
                float beta1, float beta2, float eps, float weight_decay, int step);
// The same over many tensors of one flat buffer in a single parallel pass: segment k covers
// [offset, offset + n) with its own weight decay.
struct AdamWSegment {
  size_t offset, n;
  float weight_decay;
};
void adamw_step_segments(float* params, const float* grads, float* m, float* v,
                         const AdamWSegment* segs, size_t nsegs, float lr, float beta1,
                         float beta2, float eps, int step);

// sum(x^2) accumulated in double, in a fixed order (deterministic for any thread count).
double sum_squares(const float* x, size_t n);
// x *= s
void scale(float* x, size_t n, float s);

}  // namespace cr::cpu

namespace cr::cpu {
// Attention for one new query against a KV cache (autoregressive decoding): q [H hs], caches
// [len, Hkv hs] holding keys and values of positions 0..len-1 (the new one included);
// out [H hs]. Query head h reads kv head h / (H / Hkv).
void attention_decode(float* out, const float* q, const float* kcache, const float* vcache,
                      int len, int H, int Hkv, int hs);
inline void attention_decode(float* out, const float* q, const float* kcache, const float* vcache,
                             int len, int C, int H) {
  attention_decode(out, q, kcache, vcache, len, H, H, C / H);
}
}  // namespace cr::cpu
