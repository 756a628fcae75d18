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

namespace cr::cpu {

// out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:]
void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                       int B, int T, int C);
// dwte[tokens[b,t],:] += dout[b,t,:];  dwpe[t,:] += dout[b,t,:]
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                        int B, int T, int C);

// out = (inp - mean) * rstd * weight + bias, per row of C; saves mean and rstd for backward.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int N, int C, float eps);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int N, int C);

// out[N,OC] = inp[N,C] @ weight[OC,C]^T + bias[OC]   (bias may be null)
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                    int C, int OC);
// dinp = dout @ weight (overwritten; may be null), dweight += dout^T @ inp, dbias += sum(dout)
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int N, int C, int OC);

// Causal multi-head self-attention. qkv is [B,T,3C] laid out q|k|v, each split into H heads of
// C/H contiguous channels. att [B,H,T,T] receives the softmax probabilities (upper triangle 0);
// out is [B,T,C].
void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int H);
// dqkv is overwritten.
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att,
                        int B, int T, int C, int H);

// GELU, tanh approximation (GPT-2's "gelu_new").
void gelu_forward(float* out, const float* inp, size_t n);
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n);

// out = a + b
void residual_forward(float* out, const float* a, const float* b, size_t n);

// Fused softmax + cross-entropy over the first V of Vp logits per row (the padding columns are
// masked out: they get probability 0 and gradient 0). losses[N] receives -log p[target].
// When dlogits is non-null it receives (softmax - onehot) * dloss; it may alias logits.
void crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                   const int32_t* targets, int N, int V, int Vp, float dloss);

// One AdamW step over a contiguous range, PyTorch semantics: decoupled decay p -= lr*wd*p,
// bias-corrected moments, eps added after the square root. step counts from 1.
void adamw_step(float* params, const float* grads, float* m, float* v, size_t n, float lr,
                float beta1, float beta2, float eps, float weight_decay, int step);

// sum(x^2) accumulated in double, in a fixed order (deterministic for any thread count).
double sum_squares(const float* x, size_t n);
// x *= s
void scale(float* x, size_t n, float s);

}  // namespace cr::cpu

namespace cr::cpu {
// Attention for one new query against a KV cache (autoregressive decoding): q [C], caches
// [len, C] holding keys and values of positions 0..len-1 (the new one included); out [C].
void attention_decode(float* out, const float* q, const float* kcache, const float* vcache,
                      int len, int C, int H);
}  // namespace cr::cpu
