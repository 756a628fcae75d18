// The decoder-only transformer (GPT-2 architecture) with explicit forward and backward passes.
//
// Parameters, gradients and (in core/optim) the AdamW moments each live in ONE contiguous
// buffer, described by a ParamLayout: a named list of tensors with offsets. That flat view is
// what the data-parallel all-reduce and the sharded checkpoint operate on; the named view is
// what safetensors export/import and weight decay use.
//
// Forward, per block l (pre-LayerNorm):   x_mid = x + attn(ln_1(x));  x' = x_mid + mlp(ln_2(x_mid))
// Loss: logits = ln_f(x_L) wte^T (the LM head is tied to the token embedding), softmax
// cross-entropy over the real vocabulary, mean over positions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/model/config.h"
#include "core/tensor/buffer.h"

namespace cr {

struct ParamTensor {
  std::string name;           // our name, e.g. "h.3.attn.qkv.weight"
  std::vector<int64_t> shape;
  size_t offset = 0;          // in floats, into the flat buffer
  size_t numel = 0;
  bool decay = false;         // AdamW weight decay applies (matmul weights and wte only)
};

class ParamLayout {
 public:
  explicit ParamLayout(const ModelConfig& cfg);
  const std::vector<ParamTensor>& tensors() const { return tensors_; }
  const ParamTensor& at(const std::string& name) const;
  size_t total() const { return total_; }

 private:
  void add(std::string name, std::vector<int64_t> shape, bool decay);
  std::vector<ParamTensor> tensors_;
  size_t total_ = 0;
};

// Typed pointers into a flat buffer laid out by ParamLayout (parameters or gradients alike).
struct LayerWeights {
  float *ln1w, *ln1b;
  float *qkvw, *qkvb;          // [3C, C], [3C]
  float *attprojw, *attprojb;  // [C, C], [C]
  float *ln2w, *ln2b;
  float *fcw, *fcb;            // [4C, C], [4C]
  float *fcprojw, *fcprojb;    // [C, 4C], [C]
};
struct Weights {
  float* wte;  // [Vp, C]
  float* wpe;  // [block_size, C]
  std::vector<LayerWeights> layers;
  float *lnfw, *lnfb;
};
Weights bind_weights(const ModelConfig& cfg, const ParamLayout& layout, float* base);

class GPT {
 public:
  explicit GPT(const ModelConfig& cfg);

  // GPT-2 initialisation: N(0, 0.02) weights, residual projections scaled by 1/sqrt(2L),
  // zero biases, unit LayerNorm gains; padded vocabulary rows zero.
  void init(uint64_t seed);

  // Runs the model on inputs [B,T]. With targets, returns the mean loss in nats and keeps the
  // activations for backward(); without, returns 0 and leaves logits() for sampling/eval.
  float forward(const int32_t* inputs, const int32_t* targets, int B, int T);
  // Accumulates d(loss_scale * mean loss)/d(params) into grads(). Call after forward().
  void backward(float loss_scale);

  const ModelConfig& config() const { return cfg_; }
  const ParamLayout& layout() const { return layout_; }
  float* params() { return params_.data(); }
  float* grads() { return grads_.data(); }
  const float* params() const { return params_.data(); }
  size_t num_params() const { return layout_.total(); }
  void zero_grad() { grads_.zero(); }
  const float* logits() const { return acts_.logits.data(); }  // [B,T,Vp]
  const float* losses() const { return acts_.losses.data(); }  // [B,T]

  // Bytes of activation memory for a micro-batch of B x T (what forward() allocates).
  static size_t activation_bytes(const ModelConfig& cfg, int B, int T);

 private:
  struct LayerActs {
    Buffer<float> ln1, ln1_mean, ln1_rstd, qkv, att, atty, attproj, x_mid;
    Buffer<float> ln2, ln2_mean, ln2_rstd, fch, fch_gelu, fcproj, x_out;
  };
  struct Acts {
    int B = 0, T = 0;
    size_t cap_rows = 0, cap_att = 0;
    bool has_targets = false;  // forward() with targets ran and backward() has not consumed it  // allocated capacity: smaller batches reuse the buffers
    Buffer<float> x0;  // embedding output = residual stream entering block 0
    std::vector<LayerActs> layers;
    Buffer<float> lnf, lnf_mean, lnf_rstd, logits, losses;
    // backward scratch
    Buffer<float> dres, dbranch, dqkv, dfch, dln;
    Buffer<int32_t> inputs, targets;
  };
  void ensure_acts(int B, int T);

  ModelConfig cfg_;
  ParamLayout layout_;
  Buffer<float> params_, grads_;
  Weights w_, g_;
  Acts acts_;
};

}  // namespace cr
