// The decoder-only transformer, both families (config.h: gpt2, llama), with explicit forward and
// backward passes written once over the backend interface (core/backend/backend.h).
//
// Parameters, gradients and (in core/optim) the AdamW moments each live in ONE contiguous
// buffer, described by a ParamLayout: the parameter table, a list of tensors with offsets and
// the properties every consumer needs (TP split, weight decay, init, vocabulary padding, tying,
// Hugging Face name). That flat view is what the data-parallel all-reduce and the sharded
// checkpoint operate on; the named view is what safetensors export/import use.
//
// Forward, per block l (pre-norm; norm = LayerNorm for gpt2, RMSNorm for llama):
//   x_mid = x + attn(norm_1(x));   x' = x_mid + mlp(norm_2(x_mid))
//   attn:  qkv = norm_1(x) [Wq | Wk | Wv] (+ b);  llama: RoPE on q and k;  causal softmax
//          attention with H query heads sharing Hkv key/value heads;  out = att Wo (+ b)
//   mlp:   gpt2: gelu(h Wfc + b) Wproj + b;   llama: (silu(h Wgate) * h Wup) Wdown
// Loss: logits = norm_f(x_L) W_head^T (W_head = the token embedding when tied), softmax
// cross-entropy over the real vocabulary, mean over positions.
//
// Tensor parallelism (Megatron-style) over tp ranks, rank p; X is replicated on every rank:
//   attention  q, k, v column-parallel by heads: rank p holds query heads [p H/tp, (p+1) H/tp)
//              and kv heads [p Hkv/tp, (p+1) Hkv/tp), i.e. Y_p = X A_p with A = [A_1 ... A_tp];
//              attention runs on local heads only (query head groups stay on one rank).
//              o/proj row-parallel: Y = sum_p Y_p A'_p -> all-reduce(sum) in forward.
//   MLP        fc (gpt2) and gate/up (llama) column-parallel by hidden units, the activation
//              local; proj/down row-parallel, all-reduce.
//   backward   the conjugates: a column-parallel layer's dX = sum_p dY_p A_p^T is an
//              all-reduce(sum) in backward; a row-parallel layer's dX_p = dY A'_p^T is local.
//   embedding  vocab-parallel: rank p holds rows [p Vp/tp, (p+1) Vp/tp); lookups outside its
//              range give 0, an all-reduce(sum) completes x0. Backward is local.
//   LM head    vocab-parallel (tied or not): logits_p = x W_head,p^T; the cross-entropy uses an
//              all-reduce(max) and an all-reduce(sum) of per-row statistics, never the full
//              logits; dX = sum_p dlogits_p W_head,p is an all-reduce(sum) in backward.
// Replicated parameters (norms, wpe, row-parallel biases) get identical gradients on every TP
// rank because everything they see is replicated.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/tensor_parallel.h"
#include "core/tensor/tensor.h"

namespace cr {

// One row of the parameter table.
struct ParamTensor {
  std::string name;                   // our name, e.g. "h.3.attn.qkv.weight"
  std::vector<int64_t> shape;         // this rank's (local) shape
  std::vector<int64_t> global_shape;  // the whole tensor's shape
  int shard_dim = -1;                 // split over tensor-parallel ranks along this dim; -1: replicated
  size_t offset = 0;                  // in floats, into the flat buffer
  size_t numel = 0;
  bool decay = false;                 // AdamW weight decay applies (matmul weights, embedding, head)
  float init_std = 0.f;               // N(0, init_std) at init; 0: constant init_value
  float init_value = 0.f;             // norm gains 1, biases 0
  int padded_dim = -1;                // the vocabulary dim, padded to padded_vocab(tp): rows past
                                      // vocab_size are zero, not initialised, not exported; -1: none
  bool tied = false;                  // the token embedding that also serves as the LM head
  bool lm_head = false;               // the LM head (tied: the embedding row carries `tied`)
  bool positions = false;             // a learned position table (block_size rows)
  std::string hf_name;                // Hugging Face name (GPT2LMHeadModel / LlamaForCausalLM)
  bool hf_transpose = false;          // stored transposed there (GPT-2's Conv1D [in, out])
  bool hf_flatten = false;            // dims 0 and 1 merged there (GPT-2's fused qkv [3, C, ...])
};

// The parameters of tensor-parallel rank tp_rank of tp (the defaults: the whole model), in the
// order that init draws them. gpt2's fused qkv weight is [3, C, C] (q|k|v stacked), so that
// splitting heads is splitting dim 1; llama keeps q, k, v apart (their head counts differ).
class ParamLayout {
 public:
  explicit ParamLayout(const ModelConfig& cfg, int tp_rank = 0, int tp = 1);
  const std::vector<ParamTensor>& tensors() const { return tensors_; }
  const ParamTensor& at(const std::string& name) const;
  const ParamTensor* find(const std::string& name) const;
  const ParamTensor& embedding() const { return tensors_.front(); }
  const ParamTensor& lm_head() const;  // the embedding itself when tied
  size_t total() const { return total_; }

 private:
  ParamTensor& add(std::string name, std::vector<int64_t> global_shape, int shard_dim, bool decay,
                   std::string hf_name);
  // Throws a named error for a config no layout can hold (before any tensor is laid out).
  static void check(const ModelConfig& cfg, int tp);
  int tp_rank_, tp_;
  std::vector<ParamTensor> tensors_;
  size_t total_ = 0;
};

// Copies shard `rank` of `parts` along dim `dim` of a global tensor (shape) into dst, or back.
void copy_shard_out(const float* global, const std::vector<int64_t>& shape, int dim, int rank,
                    int parts, float* dst);
void copy_shard_in(const float* src, const std::vector<int64_t>& shape, int dim, int rank,
                   int parts, float* global);

// A linear layer that writes a column block [col, col + cols) of a wider activation.
struct Projection {
  TensorView w, b;  // [cols, in], [cols] (b empty: no bias)
  int cols = 0, col = 0;
};
struct NormWeights {
  TensorView w, b;  // b empty for RMSNorm
};
// Views into a flat buffer laid out by ParamLayout (parameters or gradients alike).
struct LayerWeights {
  NormWeights ln1, ln2;
  std::vector<Projection> qkv;  // gpt2: the fused qkv; llama: q, k, v (into one [N, Wqkv] row)
  Projection attn_proj;         // row-parallel output projection (o_proj)
  std::vector<Projection> fc;   // gpt2: fc; llama: gate, up (into one [N, 2F] row)
  Projection mlp_proj;          // row-parallel (down_proj)
};
struct Weights {
  TensorView wte;   // [Vp/tp, C]
  TensorView wpe;   // [block_size, C] (gpt2; empty for llama)
  TensorView head;  // the LM head [Vp/tp, C]: wte itself when tied
  std::vector<LayerWeights> layers;
  NormWeights lnf;
};
Weights bind_weights(const ModelConfig& cfg, const ParamLayout& layout, const DeviceBuffer& base);

// Activation memory of one micro-batch, in bytes, at the model's compute dtype (activations
// in it; the saved statistics f32, token ids i32).
struct ActivationPlan {
  bool recompute = false;
  size_t per_layer = 0;   // kept for backward by each transformer block
  size_t layers = 0;      // per_layer x n_layer
  size_t classifier = 0;  // one chunk of logits and the loss's row statistics
  size_t other = 0;       // embeddings, final norm, shared and backward scratch
  size_t bytes() const { return layers + classifier + other; }
};

// The keys and values of every layer for autoregressive decoding of `batch` sequences in
// lockstep: [n_layer, batch, block_size, Hkv hs], in the model's compute dtype.
struct KVCache {
  DeviceBuffer k, v;
  int len = 0;  // positions filled (the same in every sequence)
  bool bidirectional = false;  // set by decode() during a prefix-LM prefill only
  int batch = 1;
};

class GPT {
 public:
  // tp: the tensor-parallel group this rank's shard belongs to; null for the whole model.
  // backend: where parameters, activations and ops live; null for the CPU backend.
  // dtype: the compute dtype (train.dtype). F32, or BF16: activations, their gradients and a
  // bf16 copy of the weights that the forward reads are bf16, GEMMs take bf16 and accumulate in
  // f32; the master weights (params()), the gradients (grads()) and the optimizer stay f32.
  explicit GPT(const ModelConfig& cfg, TensorParallelComm* tp = nullptr, Backend* backend = nullptr,
               DType dtype = DType::F32);

  // Initialisation from the parameter table: N(0, 0.02) weights, residual projections scaled by
  // 1/sqrt(2L), zero biases, unit norm gains; padded vocabulary rows zero. Every tp layout
  // draws the same whole model and keeps its shard, so every layout starts from the same weights.
  void init(uint64_t seed);
  // The whole model's parameters, laid out by ParamLayout(cfg) (tp 1): load this rank's shard
  // from them, or gather them from every TP rank (a collective; every rank receives them).
  void load_full(const float* full);
  std::vector<float> gather_full() const;
  int tp_rank() const { return tp_rank_; }
  int tp_size() const { return tp_size_; }
  Backend& backend() const { return *be_; }

  // Training: forward, loss and backward in one pass, accumulating d(loss_scale * mean loss)/
  // d(params) into grads(). The LM head runs in chunks of rows (classifier_chunk_rows), each
  // turned into its gradient while it is hot, so the [B*T, V] logits never exist at once.
  // Returns the mean loss in nats.
  //   targets [B,T]: a negative target is not counted (a loss mask): the mean and its gradient
  //     run over the counted positions only (0 and no gradient when none is counted).
  //   kv_range [B,T,2] (host, optional): the keys each query attends to, [lo, hi] inclusive
  //     (backend.h; core/data/attention_mask.h builds it for document masks and prefix-LM);
  //     null is causal attention.
  float forward_backward(const int32_t* inputs, const int32_t* targets, int B, int T,
                         float loss_scale, const int32_t* kv_range = nullptr);
  // Runs the model on inputs [B,T]. With targets, returns the mean loss in nats (losses() per
  // position) and keeps the activations for backward(); without, returns 0 and leaves every
  // logit in logits() for sampling.
  float forward(const int32_t* inputs, const int32_t* targets, int B, int T,
                const int32_t* kv_range = nullptr);
  // Accumulates d(loss_scale * mean loss)/d(params) into grads(). Call after forward() with
  // targets. Recomputes the logits chunk by chunk (one more LM-head GEMM than forward_backward);
  // the gradients are bit-identical to forward_backward's.
  void backward(float loss_scale);
  // Autoregressive decoding (tp 1): runs tokens[0:n] at positions cache.len.. through the same
  // blocks, attending to the cache and appending to it; returns the last position's logits in
  // host memory, f32 (padded_vocab() of them, the first vocab_size real).
  // prefix: these n tokens are a prefix-LM prompt, read bidirectionally (each attends to all n);
  // only as the first call on a cache. Later calls are causal.
  const float* decode(const int32_t* tokens, int n, KVCache& cache, bool prefix = false);
  // The same for cache.batch sequences side by side: tokens [B, n] (B = cache.batch) at positions
  // cache.len..; returns each sequence's last-position logits, [B, padded_vocab()] host f32.
  // Row b's logits depend only on sequence b's tokens; the bits can differ from a run with
  // another B (GEMM blocking), so callers that need reproducible logits keep B fixed.
  const float* decode_batch(const int32_t* tokens, int B, int n, KVCache& cache);
  KVCache make_cache(int batch = 1) const;

  const ModelConfig& config() const { return cfg_; }
  const ParamLayout& layout() const { return layout_; }
  DType dtype() const { return dtype_; }
  // The f32 master weights and gradients, flat (ParamLayout offsets), on the backend's device.
  // Any non-const access marks the bf16 compute copy stale (rebuilt before the next forward);
  // after writing through a pointer kept from earlier, call params_changed().
  DeviceBuffer& param_buffer() { return params_changed(), params_; }
  const DeviceBuffer& param_buffer() const { return params_; }
  DeviceBuffer& grad_buffer() { return grads_; }
  void params_changed() { compute_stale_ = true; }
  // Host pointers to the same, for a model on the CPU backend (throws on another device).
  float* params() { return params_changed(), host_f32(params_, "params()"); }
  const float* params() const { return host_f32(params_, "params()"); }
  float* grads() { return host_f32(grads_, "grads()"); }
  size_t num_params() const { return layout_.total(); }
  void zero_grad() { grads_.zero(); }
  // [B,T,Vp/tp] after forward() without targets; with targets, the last classifier chunk. CPU
  // backend and f32 only (throws otherwise).
  const float* logits() const { return host_f32(acts_.logits, "logits()"); }
  const float* losses() const { return losses_.data(); }  // [B,T], host memory, nats

  // Activation memory for a micro-batch of B x T at tp (what forward() allocates), by part.
  static ActivationPlan activation_plan(const ModelConfig& cfg, int B, int T, int tp = 1,
                                        bool recompute = false, DType dtype = DType::F32);
  // Recompute the activation and norm outputs in backward instead of keeping them: about 40%
  // less activation memory for ~3% more arithmetic; results are bit-identical.
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
  // Backward finishes the gradients from the end of the flat buffer towards its start: the
  // final norm (and an untied LM head), then layer L-1, ..., layer 0, then the embeddings (a
  // tied embedding is also the LM head, so it is final only at the very end). While a hook is
  // set, backward calls hook(p) at each such point: every gradient at flat offset >= p is final
  // for this backward (on the backend's stream: synchronise before reading it on the host).
  // grad_ready_offsets() lists those p in the order they come (strictly decreasing, last 0):
  // what data parallelism needs to start reducing gradients while backward goes on.
  using GradReadyHook = std::function<void(size_t)>;
  void set_grad_ready_hook(GradReadyHook hook) { grad_ready_ = std::move(hook); }
  const std::vector<size_t>& grad_ready_offsets() const { return ready_offsets_; }
  // Tests: force chunks of `rows` rows (0: automatic), to reach the multi-chunk path on small models.
  void set_classifier_chunk_rows(int rows) { chunk_rows_override_ = rows; }

 private:
  // What each layer keeps for backward. ln1, ln2 and act are empty under recompute (the shared
  // rc_* buffers hold the current layer's instead). ln*_mean is unused by RMSNorm.
  struct LayerActs {
    DeviceBuffer ln1, ln1_mean, ln1_rstd, qkv, lse, atty, x_mid;
    DeviceBuffer ln2, ln2_mean, ln2_rstd, fch, act, x_out;
  };
  struct Acts {
    int B = 0, T = 0;
    bool has_targets = false;  // forward() with targets ran and backward() has not consumed it
    int counted = 0;           // targets >= 0 of the last forward (the loss's denominator)
    bool has_range = false;    // kv_range holds the last forward's attention key ranges
    DeviceBuffer x0;      // embedding output = residual stream entering block 0
    DeviceBuffer branch;  // a branch's output before the residual add (not needed by backward)
    DeviceBuffer rc_ln1, rc_ln2, rc_act;  // recompute: the current layer's norm / MLP act outputs
    std::vector<LayerActs> layers;
    DeviceBuffer lnf, lnf_mean, lnf_rstd, logits;
    DeviceBuffer ce_max, ce_sums;  // vocab-parallel cross-entropy row statistics
    // backward scratch
    DeviceBuffer dres, dbranch, dqkv, dfch, dact, dln;
    DeviceBuffer inputs, targets;  // int32
    DeviceBuffer kv_range;         // int32 [B,T,2]
  };
  // The one description of the activation buffers: calls f(buffer, floats, part) for each.
  struct Shape;
  template <typename F>
  static void for_each_activation(Acts& a, const Shape& s, F&& f);
  static Shape make_shape(const ModelConfig& cfg, int tp, bool recompute, int chunk_override, int B,
                          int T, bool full_logits, DType dtype);
  Shape shape_for(int B, int T, bool full_logits) const;
  void ensure_acts(int B, int T, bool full_logits = false);
  TensorView ln1_buf(int l) { return recompute_ ? acts_.rc_ln1.view() : acts_.layers[l].ln1.view(); }
  TensorView ln2_buf(int l) { return recompute_ ? acts_.rc_ln2.view() : acts_.layers[l].ln2.view(); }
  TensorView act_buf(int l) { return recompute_ ? acts_.rc_act.view() : acts_.layers[l].act.view(); }

  // The block, written once: forward (training, evaluation, or decoding against a cache),
  // its backward, and the pieces recompute rebuilds.
  TensorView key_range() const;  // the last forward's kv_range on the device, or empty (causal)
  void forward_trunk(const int32_t* inputs, const int32_t* targets, int B, int T, int pos0 = 0,
                     KVCache* cache = nullptr, const int32_t* kv_range = nullptr);
  void block_forward(int l, TensorView x_in, int B, int T, int pos0, KVCache* cache);
  void block_attention(int l, int B, int T, int pos0, KVCache* cache);
  void mlp_activation(int l, int N);
  void block_backward(int l, TensorView x_in);
  float classifier(float loss_scale, bool grad);
  void backward_trunk();
  // The family's norm (LayerNorm or RMSNorm) over N rows.
  void norm_forward(TensorView out, TensorView mean, TensorView rstd, TensorView x,
                    const NormWeights& w, int N);
  void residual_norm_forward(TensorView x, TensorView out, TensorView mean, TensorView rstd,
                             TensorView a, TensorView b, const NormWeights& w, int N);
  void norm_apply(TensorView out, TensorView x, TensorView mean, TensorView rstd,
                  const NormWeights& w, int N);
  void norm_backward(TensorView dx, const NormWeights& g, TensorView dout, TensorView x,
                     const NormWeights& w, TensorView mean, TensorView rstd, int N);

  // TP all-reduces over the first n elements of buf (sum, or max for max_op), in f32. A host
  // communicator (MPI) gets device or bf16 buffers staged through host_stage_; a device one
  // (NCCL) reduces f32 device buffers in place and bf16 ones widened into device_stage_.
  void reduce_tp(TensorView buf, size_t n, const char* what, bool max_op = false);
  // v copied into host_stage_ as f32 (widened from bf16), and back from it (rounded to bf16 once).
  float* to_host_f32(const TensorView& v);
  void from_host_f32(const TensorView& v);
  // Rebuilds the bf16 compute copy of the weights from the f32 masters when they changed.
  void sync_compute_weights();
  static float* host_f32(const DeviceBuffer& b, const char* what);

  ModelConfig cfg_;
  TensorParallelComm* tp_;
  Backend* be_;
  int tp_rank_, tp_size_;
  ParamLayout layout_;
  DType dtype_;
  DeviceBuffer params_, grads_;
  DeviceBuffer params_c_;  // bf16 compute copy of params_ (dtype bf16 only); w_ points into it
  bool compute_stale_ = true;
  Weights w_, g_;
  Acts acts_;
  std::vector<float> losses_;      // [B,T] per-position losses of the last forward, host
  std::vector<int32_t> host_targets_;  // [B,T] the last forward's targets, host
  std::vector<float> host_stage_;  // TP collectives and decode logits staged through the host
  std::vector<float> decode_logits_;  // decode_batch()'s result
  std::vector<uint16_t> host_stage16_;
  DeviceBuffer device_stage_;  // bf16 activations widened to f32 for a device communicator
  int chunk_rows_override_ = 0;
  PassTiming timing_;
  GradReadyHook grad_ready_;
  std::vector<size_t> ready_offsets_;  // grad_ready_offsets(), from the layout once
  void grads_ready(size_t offset) {
    if (grad_ready_) grad_ready_(offset);
  }
  bool recompute_ = false;
};

}  // namespace cr
