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
//
// Tensor parallelism (Megatron-style) over tp ranks, rank p; X is replicated on every rank:
//   attention  qkv   column-parallel by heads: rank p holds heads [p H/tp, (p+1) H/tp), i.e.
//                    Y_p = X A_p with A = [A_1 ... A_tp]; attention runs on local heads only.
//              proj  row-parallel: Y = sum_p Y_p A'_p -> all-reduce(sum) in forward.
//   MLP        fc    column-parallel (4C/tp outputs), gelu local; proj row-parallel, all-reduce.
//   backward   the conjugates: a column-parallel layer's dX = sum_p dY_p A_p^T is an
//              all-reduce(sum) in backward; a row-parallel layer's dX_p = dY A'_p^T is local.
//   embedding  vocab-parallel: rank p holds wte rows [p Vp/tp, (p+1) Vp/tp); lookups outside
//              its range give 0, an all-reduce(sum) completes x0. Backward is local.
//   LM head    tied, so vocab-parallel too: logits_p = x wte_p^T; the cross-entropy uses an
//              all-reduce(max) and an all-reduce(sum) of per-row statistics, never the full
//              logits; dX = sum_p dlogits_p wte_p is an all-reduce(sum) in backward.
// Replicated parameters (LayerNorms, wpe, row-parallel biases) get identical gradients on every
// TP rank because everything they see is replicated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/model/config.h"
#include "core/model/tensor_parallel.h"
#include "core/tensor/buffer.h"

namespace cr {

struct ParamTensor {
  std::string name;                   // our name, e.g. "h.3.attn.qkv.weight"
  std::vector<int64_t> shape;         // this rank's (local) shape
  std::vector<int64_t> global_shape;  // the whole tensor's shape
  int shard_dim = -1;                 // split over tensor-parallel ranks along this dim; -1: replicated
  size_t offset = 0;                  // in floats, into the flat buffer
  size_t numel = 0;
  bool decay = false;                 // AdamW weight decay applies (matmul weights and wte only)
};

// The parameters of tensor-parallel rank tp_rank of tp (the defaults: the whole model).
// The fused qkv weight is [3, C, C] (q|k|v stacked), so that splitting heads is splitting dim 1.
class ParamLayout {
 public:
  explicit ParamLayout(const ModelConfig& cfg, int tp_rank = 0, int tp = 1);
  const std::vector<ParamTensor>& tensors() const { return tensors_; }
  const ParamTensor& at(const std::string& name) const;
  size_t total() const { return total_; }

 private:
  void add(std::string name, std::vector<int64_t> global_shape, int shard_dim, bool decay);
  int tp_rank_, tp_;
  std::vector<ParamTensor> tensors_;
  size_t total_ = 0;
};

// Copies shard `rank` of `parts` along dim `dim` of a global tensor (shape) into dst, or back.
void copy_shard_out(const float* global, const std::vector<int64_t>& shape, int dim, int rank,
                    int parts, float* dst);
void copy_shard_in(const float* src, const std::vector<int64_t>& shape, int dim, int rank,
                   int parts, float* global);

// Typed pointers into a flat buffer laid out by ParamLayout (parameters or gradients alike).
struct LayerWeights {
  float *ln1w, *ln1b;
  float *qkvw, *qkvb;          // [3, C/tp, C], [3, C/tp]
  float *attprojw, *attprojb;  // [C, C/tp], [C]
  float *ln2w, *ln2b;
  float *fcw, *fcb;            // [4C/tp, C], [4C/tp]
  float *fcprojw, *fcprojb;    // [C, 4C/tp], [C]
};
struct Weights {
  float* wte;  // [Vp/tp, C]
  float* wpe;  // [block_size, C]
  std::vector<LayerWeights> layers;
  float *lnfw, *lnfb;
};
Weights bind_weights(const ModelConfig& cfg, const ParamLayout& layout, float* base);

// Activation memory of one micro-batch, in floats (bytes() in bytes).
struct ActivationPlan {
  bool recompute = false;
  size_t per_layer = 0;   // kept for backward by each transformer block
  size_t layers = 0;      // per_layer x n_layer
  size_t classifier = 0;  // one chunk of logits and the loss's row statistics
  size_t other = 0;       // embeddings, ln_f, shared and backward scratch
  size_t bytes() const { return (layers + classifier + other) * sizeof(float); }
};

class GPT {
 public:
  // tp: the tensor-parallel group this rank's shard belongs to; null for the whole model.
  explicit GPT(const ModelConfig& cfg, TensorParallelComm* tp = nullptr);

  // GPT-2 initialisation: N(0, 0.02) weights, residual projections scaled by 1/sqrt(2L),
  // zero biases, unit LayerNorm gains; padded vocabulary rows zero. Every tp layout draws the
  // same whole model and keeps its shard, so every layout starts from the same weights.
  void init(uint64_t seed);
  // The whole model's parameters, laid out by ParamLayout(cfg) (tp 1): load this rank's shard
  // from them, or gather them from every TP rank (a collective; every rank receives them).
  void load_full(const float* full);
  std::vector<float> gather_full() const;
  int tp_rank() const { return tp_rank_; }
  int tp_size() const { return tp_size_; }

  // Training: forward, loss and backward in one pass, accumulating d(loss_scale * mean loss)/
  // d(params) into grads(). The LM head runs in chunks of rows (classifier_chunk_rows), each
  // turned into its gradient while it is hot, so the [B*T, V] logits never exist at once.
  // Returns the mean loss in nats.
  float forward_backward(const int32_t* inputs, const int32_t* targets, int B, int T,
                         float loss_scale);
  // Runs the model on inputs [B,T]. With targets, returns the mean loss in nats (losses() per
  // position) and keeps the activations for backward(); without, returns 0 and leaves every
  // logit in logits() for sampling.
  float forward(const int32_t* inputs, const int32_t* targets, int B, int T);
  // Accumulates d(loss_scale * mean loss)/d(params) into grads(). Call after forward() with
  // targets. Recomputes the logits chunk by chunk (one more LM-head GEMM than forward_backward);
  // the gradients are bit-identical to forward_backward's.
  void backward(float loss_scale);

  const ModelConfig& config() const { return cfg_; }
  const ParamLayout& layout() const { return layout_; }
  float* params() { return params_.data(); }
  float* grads() { return grads_.data(); }
  const float* params() const { return params_.data(); }
  size_t num_params() const { return layout_.total(); }
  void zero_grad() { grads_.zero(); }
  // [B,T,Vp/tp] after forward() without targets; with targets, the last classifier chunk.
  const float* logits() const { return acts_.logits.data(); }
  const float* losses() const { return acts_.losses.data(); }  // [B,T]

  // Activation memory for a micro-batch of B x T at tp (what forward() allocates), by part.
  static ActivationPlan activation_plan(const ModelConfig& cfg, int B, int T, int tp = 1,
                                        bool recompute = false);
  // Recompute the GELU and LayerNorm outputs in backward instead of keeping them: about 40% less
  // activation memory for ~3% more arithmetic; results are bit-identical.
  void set_recompute(bool on) {
    if (on != recompute_) acts_ = Acts{};
    recompute_ = on;
  }
  bool recompute() const { return recompute_; }
  // Rows of logits the classifier computes at a time: at most kClassifierChunkBytes of them.
  static constexpr size_t kClassifierChunkBytes = size_t(128) << 20;
  static int classifier_chunk_rows(const ModelConfig& cfg, int N, int tp = 1);
  // Where the last forward_backward() spent its time: the forward part (trunk, LM head, loss)
  // and the backward part (dlogits and the LM head's gradients, then the trunk), in seconds.
  struct PassTiming {
    double forward = 0, backward = 0;
  };
  const PassTiming& last_timing() const { return timing_; }
  // Tests: force chunks of `rows` rows (0: automatic), to reach the multi-chunk path on small models.
  void set_classifier_chunk_rows(int rows) { chunk_rows_override_ = rows; }

 private:
  // What each layer keeps for backward. ln1, ln2 and fch_gelu are empty under recompute (the
  // shared rc_* buffers hold the current layer's instead).
  struct LayerActs {
    Buffer<float> ln1, ln1_mean, ln1_rstd, qkv, lse, atty, x_mid;
    Buffer<float> ln2, ln2_mean, ln2_rstd, fch, fch_gelu, x_out;
  };
  struct Acts {
    int B = 0, T = 0;
    size_t cap_rows = 0, cap_att = 0;
    bool has_targets = false;  // forward() with targets ran and backward() has not consumed it  // allocated capacity: smaller batches reuse the buffers
    Buffer<float> x0;      // embedding output = residual stream entering block 0
    Buffer<float> branch;  // a branch's output before the residual add (not needed by backward)
    Buffer<float> rc_ln1, rc_ln2, rc_gelu;  // recompute: the current layer's LN / GELU outputs
    std::vector<LayerActs> layers;
    Buffer<float> lnf, lnf_mean, lnf_rstd, logits, losses;
    Buffer<float> ce_max, ce_sums;  // vocab-parallel cross-entropy row statistics
    // backward scratch
    Buffer<float> dres, dbranch, dqkv, dfch, dln;
    Buffer<int32_t> inputs, targets;
  };
  void ensure_acts(int B, int T);
  float* ln1_buf(int l) { return recompute_ ? acts_.rc_ln1.data() : acts_.layers[l].ln1.data(); }
  float* ln2_buf(int l) { return recompute_ ? acts_.rc_ln2.data() : acts_.layers[l].ln2.data(); }
  float* gelu_buf(int l) { return recompute_ ? acts_.rc_gelu.data() : acts_.layers[l].fch_gelu.data(); }
  void forward_trunk(const int32_t* inputs, const int32_t* targets, int B, int T);
  float classifier(float loss_scale, bool grad);
  void backward_trunk();

  void reduce_tp(float* buf, size_t n, const char* what);

  ModelConfig cfg_;
  TensorParallelComm* tp_;
  int tp_rank_, tp_size_;
  ParamLayout layout_;
  Buffer<float> params_, grads_;
  Weights w_, g_;
  Acts acts_;
  int chunk_rows_override_ = 0;
  PassTiming timing_;
  bool recompute_ = false;
};

}  // namespace cr
