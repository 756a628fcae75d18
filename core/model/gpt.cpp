// The decoder-only transformer (both families) over the backend interface, in the order of a
// training step: parameter table -> construction and init -> activations -> forward (embedding,
// blocks, LM head and loss) -> backward.
#include "core/model/gpt.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "core/common/error.h"
#include "core/common/rng.h"

namespace cr {

// ----------------------------------------------------------------------------
// Parameter table

void ParamLayout::check(const ModelConfig& cfg, int tp) {
  CR_CHECK(cfg.n_layer > 0 && cfg.n_head > 0 && cfg.n_embd > 0 && cfg.block_size > 0 &&
               cfg.vocab_size > 0 && cfg.n_kv_head >= 0 && cfg.ffn_hidden >= 0,
           "model config must be positive");
  CR_CHECK(cfg.n_embd % cfg.n_head == 0, "n_embd {} % n_head {}", cfg.n_embd, cfg.n_head);
  CR_CHECK(cfg.n_head % cfg.kv_heads() == 0, "n_head {} % n_kv_head {}", cfg.n_head, cfg.kv_heads());
  CR_CHECK(cfg.n_head % tp == 0, "n_head {} % tp {}", cfg.n_head, tp);
  CR_CHECK(cfg.kv_heads() % tp == 0, "n_kv_head {} % tp {}", cfg.kv_heads(), tp);
  CR_CHECK(cfg.ffn_hidden_size() % tp == 0, "ffn_hidden {} % tp {}", cfg.ffn_hidden_size(), tp);
  CR_CHECK(!cfg.llama() || cfg.head_size() % 2 == 0,
           "rotary embedding needs an even head size, got {}", cfg.head_size());
}

ParamLayout::ParamLayout(const ModelConfig& cfg, int tp_rank, int tp) : tp_rank_(tp_rank), tp_(tp) {
  CR_CHECK(tp >= 1 && tp_rank >= 0 && tp_rank < tp, "tp rank {} of {}", tp_rank, tp);
  check(cfg, tp);
  const int64_t C = cfg.n_embd, Vp = cfg.padded_vocab(tp), F = cfg.ffn_hidden_size();
  const int64_t hs = cfg.head_size(), Cq = (int64_t)cfg.n_head * hs, Ckv = (int64_t)cfg.kv_heads() * hs;
  const float std = 0.02f, residual_std = 0.02f / std::sqrt(2.f * cfg.n_layer);
  // Row kinds of the table: a matmul weight (decayed, N(0, std)), a bias (zero), a norm gain (one).
  // GPT-2's Conv1D stores matmul weights [in, out] in Hugging Face files, Llama's nn.Linear as we do.
  auto weight = [&](std::string n, std::vector<int64_t> s, int dim, float sd, std::string hf) {
    ParamTensor& t = add(std::move(n), std::move(s), dim, true, std::move(hf));
    t.init_std = sd, t.hf_transpose = !cfg.llama();
  };
  auto bias = [&](std::string n, std::vector<int64_t> s, int dim, std::string hf) {
    add(std::move(n), std::move(s), dim, false, std::move(hf));
  };
  auto gain = [&](std::string n, int64_t c, std::string hf) {
    add(std::move(n), {c}, -1, false, std::move(hf)).init_value = 1.f;
  };
  auto vocab = [&](std::string n, std::string hf, bool tied, bool head) {
    ParamTensor& t = add(std::move(n), {Vp, C}, 0, true, std::move(hf));
    t.init_std = std, t.padded_dim = 0, t.tied = tied, t.lm_head = head;
  };

  if (!cfg.llama()) {  // GPT-2: Hugging Face GPT2LMHeadModel names
    vocab("wte", "wte.weight", cfg.tie_embeddings, false);
    ParamTensor& wpe = add("wpe", {cfg.block_size, C}, -1, false, "wpe.weight");
    wpe.init_std = std, wpe.positions = true;
    for (int l = 0; l < cfg.n_layer; l++) {
      const std::string p = "h." + std::to_string(l) + ".";
      gain(p + "ln_1.weight", C, p + "ln_1.weight");
      bias(p + "ln_1.bias", {C}, -1, p + "ln_1.bias");
      weight(p + "attn.qkv.weight", {3, C, C}, 1, std, p + "attn.c_attn.weight");
      tensors_.back().hf_flatten = true;  // c_attn.weight is [C, 3C]
      bias(p + "attn.qkv.bias", {3, C}, 1, p + "attn.c_attn.bias");
      tensors_.back().hf_flatten = true;
      weight(p + "attn.proj.weight", {C, C}, 1, residual_std, p + "attn.c_proj.weight");
      bias(p + "attn.proj.bias", {C}, -1, p + "attn.c_proj.bias");
      gain(p + "ln_2.weight", C, p + "ln_2.weight");
      bias(p + "ln_2.bias", {C}, -1, p + "ln_2.bias");
      weight(p + "mlp.fc.weight", {F, C}, 0, std, p + "mlp.c_fc.weight");
      bias(p + "mlp.fc.bias", {F}, 0, p + "mlp.c_fc.bias");
      weight(p + "mlp.proj.weight", {C, F}, 1, residual_std, p + "mlp.c_proj.weight");
      bias(p + "mlp.proj.bias", {C}, -1, p + "mlp.c_proj.bias");
    }
    gain("ln_f.weight", C, "ln_f.weight");
    bias("ln_f.bias", {C}, -1, "ln_f.bias");
  } else {  // Llama: Hugging Face LlamaForCausalLM names, nn.Linear layout
    vocab("wte", "model.embed_tokens.weight", cfg.tie_embeddings, false);
    for (int l = 0; l < cfg.n_layer; l++) {
      const std::string p = "h." + std::to_string(l) + ".";
      const std::string hf = "model.layers." + std::to_string(l) + ".";
      gain(p + "ln_1.weight", C, hf + "input_layernorm.weight");
      weight(p + "attn.q.weight", {Cq, C}, 0, std, hf + "self_attn.q_proj.weight");
      weight(p + "attn.k.weight", {Ckv, C}, 0, std, hf + "self_attn.k_proj.weight");
      weight(p + "attn.v.weight", {Ckv, C}, 0, std, hf + "self_attn.v_proj.weight");
      if (cfg.bias) {
        bias(p + "attn.q.bias", {Cq}, 0, hf + "self_attn.q_proj.bias");
        bias(p + "attn.k.bias", {Ckv}, 0, hf + "self_attn.k_proj.bias");
        bias(p + "attn.v.bias", {Ckv}, 0, hf + "self_attn.v_proj.bias");
      }
      weight(p + "attn.proj.weight", {C, Cq}, 1, residual_std, hf + "self_attn.o_proj.weight");
      if (cfg.bias) bias(p + "attn.proj.bias", {C}, -1, hf + "self_attn.o_proj.bias");
      gain(p + "ln_2.weight", C, hf + "post_attention_layernorm.weight");
      weight(p + "mlp.gate.weight", {F, C}, 0, std, hf + "mlp.gate_proj.weight");
      weight(p + "mlp.up.weight", {F, C}, 0, std, hf + "mlp.up_proj.weight");
      weight(p + "mlp.proj.weight", {C, F}, 1, residual_std, hf + "mlp.down_proj.weight");
    }
    gain("ln_f.weight", C, "model.norm.weight");
  }
  if (!cfg.tie_embeddings) vocab("lm_head", "lm_head.weight", false, true);
}

const ParamTensor& ParamLayout::lm_head() const {
  if (tensors_.front().tied) return tensors_.front();
  for (const auto& t : tensors_)
    if (t.lm_head) return t;
  CR_THROW("the parameter table has no LM head");
}

ParamTensor& ParamLayout::add(std::string name, std::vector<int64_t> global_shape, int shard_dim,
                              bool decay, std::string hf_name) {
  std::vector<int64_t> shape = global_shape;
  if (shard_dim >= 0) {
    CR_CHECK(shape[shard_dim] % tp_ == 0, "{} dim {} = {} does not split over {} ranks", name,
             shard_dim, shape[shard_dim], tp_);
    shape[shard_dim] /= tp_;
  }
  size_t n = 1;
  for (auto d : shape) n *= (size_t)d;
  ParamTensor t;
  t.name = std::move(name);
  t.shape = std::move(shape);
  t.global_shape = std::move(global_shape);
  t.shard_dim = shard_dim;
  t.offset = total_;
  t.numel = n;
  t.decay = decay;
  t.hf_name = std::move(hf_name);
  tensors_.push_back(std::move(t));
  total_ += n;
  return tensors_.back();
}

namespace {
// A tensor seen as [outer, dim, inner] around its split dimension.
void split_dims(const std::vector<int64_t>& shape, int dim, size_t* outer, size_t* len, size_t* inner) {
  *outer = 1, *inner = 1;
  for (int i = 0; i < dim; i++) *outer *= (size_t)shape[i];
  for (size_t i = dim + 1; i < shape.size(); i++) *inner *= (size_t)shape[i];
  *len = (size_t)shape[dim];
}
}  // namespace

void copy_shard_out(const float* global, const std::vector<int64_t>& shape, int dim, int rank,
                    int parts, float* dst) {
  size_t outer, len, inner;
  split_dims(shape, dim, &outer, &len, &inner);
  const size_t local = len / parts * inner;
  for (size_t o = 0; o < outer; o++)
    std::memcpy(dst + o * local, global + o * len * inner + rank * local, local * sizeof(float));
}

void copy_shard_in(const float* src, const std::vector<int64_t>& shape, int dim, int rank,
                   int parts, float* global) {
  size_t outer, len, inner;
  split_dims(shape, dim, &outer, &len, &inner);
  const size_t local = len / parts * inner;
  for (size_t o = 0; o < outer; o++)
    std::memcpy(global + o * len * inner + rank * local, src + o * local, local * sizeof(float));
}

const ParamTensor* ParamLayout::find(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

const ParamTensor& ParamLayout::at(const std::string& name) const {
  if (const ParamTensor* t = find(name)) return *t;
  CR_THROW("no parameter named '{}'", name);
}

Weights bind_weights(const ModelConfig& cfg, const ParamLayout& layout, const DeviceBuffer& base) {
  auto v = [&](const std::string& n) -> TensorView {
    const ParamTensor* t = layout.find(n);
    return t ? base.view(t->offset, t->numel) : TensorView{};
  };
  // A projection's output width is its (local) first dimension; gpt2's qkv is [3, C/tp, C].
  auto proj = [&](const std::string& n, int col) {
    const ParamTensor& t = layout.at(n + ".weight");
    const int cols = (int)(t.numel / (size_t)t.shape.back());
    return Projection{v(n + ".weight"), v(n + ".bias"), cols, col};
  };
  Weights w;
  w.wte = v("wte");
  w.wpe = v("wpe");
  const ParamTensor& head = layout.lm_head();
  w.head = base.view(head.offset, head.numel);
  for (int l = 0; l < cfg.n_layer; l++) {
    const std::string h = "h." + std::to_string(l) + ".";
    LayerWeights lw;
    lw.ln1 = {v(h + "ln_1.weight"), v(h + "ln_1.bias")};
    lw.ln2 = {v(h + "ln_2.weight"), v(h + "ln_2.bias")};
    if (!cfg.llama()) {
      lw.qkv = {proj(h + "attn.qkv", 0)};
      lw.fc = {proj(h + "mlp.fc", 0)};
    } else {
      lw.qkv = {proj(h + "attn.q", 0)};
      lw.qkv.push_back(proj(h + "attn.k", lw.qkv[0].cols));
      lw.qkv.push_back(proj(h + "attn.v", lw.qkv[1].col + lw.qkv[1].cols));
      lw.fc = {proj(h + "mlp.gate", 0)};
      lw.fc.push_back(proj(h + "mlp.up", lw.fc[0].cols));
    }
    lw.attn_proj = proj(h + "attn.proj", 0);
    lw.mlp_proj = proj(h + "mlp.proj", 0);
    w.layers.push_back(std::move(lw));
  }
  w.lnf = {v("ln_f.weight"), v("ln_f.bias")};
  return w;
}

// ----------------------------------------------------------------------------
// Construction and initialisation

GPT::GPT(const ModelConfig& cfg, TensorParallelComm* tp, Backend* backend, DType dtype)
    : cfg_(cfg),
      tp_(tp),
      be_(backend ? backend : &cpu_backend()),
      tp_rank_(tp ? tp->rank() : 0),
      tp_size_(tp ? tp->size() : 1),
      layout_(cfg, tp_rank_, tp_size_),  // ParamLayout checks the config first
      dtype_(dtype) {
  CR_CHECK(dtype == DType::F32 || dtype == DType::BF16, "compute dtype {}: expected f32 or bf16",
           dtype_name(dtype));
  params_ = DeviceBuffer(be_->allocator(), DType::F32, layout_.total());
  grads_ = DeviceBuffer(be_->allocator(), DType::F32, layout_.total());
  if (dtype_ == DType::BF16) params_c_ = DeviceBuffer(be_->allocator(), DType::BF16, layout_.total());
  // Where backward finishes gradients (grad_ready_offsets): each block starts with ln_1.
  ready_offsets_ = {layout_.at("ln_f.weight").offset};
  for (int l = cfg_.n_layer - 1; l >= 0; l--)
    ready_offsets_.push_back(layout_.at("h." + std::to_string(l) + ".ln_1.weight").offset);
  ready_offsets_.push_back(0);
  w_ = bind_weights(cfg_, layout_, dtype_ == DType::BF16 ? params_c_ : params_);
  g_ = bind_weights(cfg_, layout_, grads_);
}

float* GPT::host_f32(const DeviceBuffer& b, const char* what) {
  CR_CHECK(b.device() == Device::CPU, "{}: the model lives on {}; copy with Backend::copy", what,
           device_name(b.device()));
  return b.f32();
}

void GPT::sync_compute_weights() {
  if (dtype_ != DType::BF16 || !compute_stale_) return;
  be_->cast(params_c_.view(), params_.view());
  compute_stale_ = false;
}

void GPT::init(uint64_t seed) {
  // Draw the whole (tp 1) model in table order, then keep this rank's shard. Only the real
  // vocabulary rows of padded tensors are drawn, so the stream does not depend on the padding.
  const ParamLayout full_layout(cfg_);
  std::vector<float> full(full_layout.total(), 0.f);
  Rng rng(seed);
  for (const auto& t : full_layout.tensors()) {
    float* p = full.data() + t.offset;
    if (t.init_std == 0.f) {
      std::fill(p, p + t.numel, t.init_value);
      continue;
    }
    const size_t n = t.padded_dim == 0 ? (size_t)cfg_.vocab_size * t.shape[1] : t.numel;
    for (size_t i = 0; i < n; i++) p[i] = (float)(rng.normal() * t.init_std);
  }
  load_full(full.data());
}

void GPT::load_full(const float* full) {
  // Staged through host memory one tensor at a time (the device may not be the host).
  const ParamLayout full_layout(cfg_);
  std::vector<float> local;
  for (const auto& t : layout_.tensors()) {
    const float* src = full + full_layout.at(t.name).offset;
    local.resize(t.numel);
    float* dst = local.data();
    if (t.padded_dim == 0) {  // vocabulary rows: this shard's block; rows past the real ones zero
      const size_t C = (size_t)t.shape[1];
      const int64_t first = (int64_t)tp_rank_ * t.shape[0];
      for (int64_t r = 0; r < t.shape[0]; r++) {
        const int64_t g = first + r;
        if (g < cfg_.vocab_size)
          std::memcpy(dst + r * C, src + g * C, C * sizeof(float));
        else
          std::memset(dst + r * C, 0, C * sizeof(float));
      }
    } else if (t.shard_dim >= 0) {
      copy_shard_out(src, t.global_shape, t.shard_dim, tp_rank_, tp_size_, dst);
    } else {
      std::memcpy(dst, src, t.numel * sizeof(float));
    }
    be_->copy(params_.view(t.offset, t.numel), TensorView::f32(dst, {(int64_t)t.numel}));
  }
  params_changed();
}

std::vector<float> GPT::gather_full() const {
  const ParamLayout full_layout(cfg_);
  std::vector<float> full(full_layout.total(), 0.f), local, all;
  for (const auto& t : layout_.tensors()) {
    local.resize(t.numel);
    be_->copy(TensorView::f32(local.data(), {(int64_t)t.numel}), params_.view(t.offset, t.numel));
    const float* src = local.data();
    const ParamTensor& ft = full_layout.at(t.name);
    float* dst = full.data() + ft.offset;
    if (tp_size_ == 1 || t.shard_dim < 0) {
      std::memcpy(dst, src, std::min(t.numel, ft.numel) * sizeof(float));  // padding differs
      continue;
    }
    all.resize(t.numel * tp_size_);
    tp_->all_gather(src, all.data(), t.numel, "gather_params");
    if (t.padded_dim == 0) {  // shards are consecutive row blocks: keep the real rows
      std::memcpy(dst, all.data(), (size_t)cfg_.vocab_size * t.shape[1] * sizeof(float));
      continue;
    }
    for (int r = 0; r < tp_size_; r++)
      copy_shard_in(all.data() + r * t.numel, t.global_shape, t.shard_dim, r, tp_size_, dst);
  }
  return full;
}

void GPT::reduce_tp(TensorView buf, size_t n, const char* what, bool max_op) {
  if (tp_size_ == 1) return;
  const TensorView v = buf.slice(0, n);
  auto reduce = [&](float* p) {
    max_op ? tp_->all_reduce_max(p, n, what) : tp_->all_reduce_sum(p, n, what);
  };
  if (v.dtype == DType::F32 && (v.device == Device::CPU || tp_->device_memory()))
    return reduce(v.f32());
  if (v.device != Device::CPU && tp_->device_memory()) {  // bf16 on the device: widen, reduce
    if (device_stage_.size() < n) device_stage_ = DeviceBuffer(be_->allocator(), DType::F32, n);
    const TensorView wide = device_stage_.view(0, n);
    be_->cast(wide, v);
    reduce(wide.f32());
    return be_->cast(v, wide);
  }
  // Staged: to host f32 (bf16 widened exactly), reduced there, rounded back once.
  reduce(to_host_f32(v));
  from_host_f32(v);
}

float* GPT::to_host_f32(const TensorView& v) {
  const size_t n = v.numel();
  host_stage_.resize(n);
  const TensorView h32 = TensorView::f32(host_stage_.data(), {(int64_t)n});
  if (v.dtype == DType::F32) {
    be_->copy(h32, v);
  } else {
    host_stage16_.resize(n);
    const TensorView h16(host_stage16_.data(), {(int64_t)n}, DType::BF16);
    be_->copy(h16, v);
    cpu_backend().cast(h32, h16);
  }
  return host_stage_.data();
}

void GPT::from_host_f32(const TensorView& v) {
  const size_t n = v.numel();
  const TensorView h32 = TensorView::f32(host_stage_.data(), {(int64_t)n});
  if (v.dtype == DType::F32) return be_->copy(v, h32);
  const TensorView h16(host_stage16_.data(), {(int64_t)n}, DType::BF16);
  cpu_backend().cast(h16, h32);
  be_->copy(v, h16);
}

// ----------------------------------------------------------------------------
// Activations: one description (for_each_activation) serves both the memory plan printed at
// start and the allocation, so the two cannot disagree. Every buffer is sized for the call at
// hand and grown, never shrunk: a later call with a smaller B or T (a ragged evaluation tail)
// or a larger chunk of classifier rows finds every buffer large enough.

struct GPT::Shape {
  size_t B, T, N, C, Hl, Hkvl, hs, Cla, Wqkv, Fl, Wfc, Vl, chunk, logits;
  bool recompute, llama;
  DType dtype;  // of the activations
};

GPT::Shape GPT::make_shape(const ModelConfig& cfg, int P, bool recompute, int chunk_override,
                           int B, int T, bool full_logits, DType dtype) {
  Shape s;
  s.dtype = dtype;
  s.B = B, s.T = T, s.N = (size_t)B * T, s.C = cfg.n_embd;
  s.Hl = cfg.n_head / P, s.Hkvl = cfg.kv_heads() / P, s.hs = cfg.head_size();
  s.Cla = s.Hl * s.hs, s.Wqkv = (s.Hl + 2 * s.Hkvl) * s.hs;
  s.Fl = cfg.ffn_hidden_size() / P, s.llama = cfg.llama();
  s.Wfc = s.llama ? 2 * s.Fl : s.Fl;
  s.Vl = (size_t)cfg.padded_vocab(P) / P;
  s.chunk = chunk_override > 0 ? (size_t)std::min(chunk_override, (int)s.N)
                                : (size_t)classifier_chunk_rows(cfg, (int)s.N, P);
  s.logits = std::max(s.chunk, full_logits ? s.N : 0) * s.Vl;
  s.recompute = recompute;
  return s;
}

GPT::Shape GPT::shape_for(int B, int T, bool full_logits) const {
  return make_shape(cfg_, tp_size_, recompute_, chunk_rows_override_, B, T, full_logits, dtype_);
}

// Where a buffer counts in the plan.
enum class ActPart { Layer, Classifier, Other };

// f(buffer, elements, part, dtype): activations in the compute dtype, the statistics backward
// needs (norm mean/rstd, attention lse, loss row statistics) in f32, token ids in i32.
template <typename F>
void GPT::for_each_activation(Acts& a, const Shape& s, F&& f) {
  const size_t N = s.N, C = s.C, kept = s.recompute ? 0 : 1, ln_mean = s.llama ? 0 : N;
  const DType T = s.dtype, F32 = DType::F32;
  for (auto& l : a.layers) {
    const ActPart L = ActPart::Layer;
    f(l.ln1, kept * N * C, L, T), f(l.ln1_mean, ln_mean, L, F32), f(l.ln1_rstd, N, L, F32);
    f(l.qkv, N * s.Wqkv, L, T), f(l.atty, N * s.Cla, L, T), f(l.lse, s.B * s.Hl * s.T, L, F32);
    f(l.x_mid, N * C, L, T), f(l.ln2, kept * N * C, L, T), f(l.ln2_mean, ln_mean, L, F32);
    f(l.ln2_rstd, N, L, F32), f(l.fch, N * s.Wfc, L, T), f(l.act, kept * N * s.Fl, L, T);
    f(l.x_out, N * C, L, T);
  }
  // The classifier: one chunk of logits (all of them for sampling), its row sums; row max of all.
  f(a.logits, s.logits, ActPart::Classifier, T), f(a.ce_sums, 2 * s.chunk, ActPart::Classifier, F32);
  f(a.ce_max, N, ActPart::Classifier, F32);
  const ActPart O = ActPart::Other;
  f(a.x0, N * C, O, T), f(a.branch, N * C, O, T), f(a.lnf, N * C, O, T);
  f(a.lnf_mean, ln_mean, O, F32), f(a.lnf_rstd, N, O, F32);
  f(a.inputs, N, O, DType::I32), f(a.targets, N, O, DType::I32), f(a.kv_range, 2 * N, O, DType::I32);
  const size_t rc = s.recompute ? 1 : 0;
  f(a.rc_ln1, rc * N * C, O, T), f(a.rc_ln2, rc * N * C, O, T), f(a.rc_act, rc * N * s.Fl, O, T);
  // backward scratch
  f(a.dres, N * C, O, T), f(a.dbranch, N * s.Cla, O, T), f(a.dqkv, N * s.Wqkv, O, T);
  f(a.dfch, N * s.Wfc, O, T), f(a.dact, s.llama ? N * s.Fl : 0, O, T), f(a.dln, N * C, O, T);
}

ActivationPlan GPT::activation_plan(const ModelConfig& cfg, int B, int T, int tp, bool recompute,
                                    DType dtype) {
  Acts a;  // never allocated: the description is only measured
  a.layers.resize(1);  // per-layer sizes do not depend on depth
  ActivationPlan p;
  p.recompute = recompute;
  for_each_activation(a, make_shape(cfg, tp, recompute, 0, B, T, false, dtype),
                      [&](DeviceBuffer&, size_t n, ActPart part, DType t) {
                        (part == ActPart::Layer        ? p.per_layer
                         : part == ActPart::Classifier ? p.classifier
                                                       : p.other) += n * dtype_size(t);
                      });
  p.layers = p.per_layer * cfg.n_layer;
  return p;
}

void GPT::ensure_acts(int B, int T, bool full_logits) {
  Acts& a = acts_;
  a.B = B, a.T = T;
  if ((int)a.layers.size() != cfg_.n_layer) a.layers.resize(cfg_.n_layer);
  for_each_activation(a, shape_for(B, T, full_logits),
                      [&](DeviceBuffer& buf, size_t n, ActPart, DType t) {
                        if (buf.size() >= n) return;
                        buf = DeviceBuffer(be_->allocator(), t, n);
                      });
  if (losses_.size() < (size_t)B * T) losses_.resize((size_t)B * T);
}

int GPT::classifier_chunk_rows(const ModelConfig& cfg, int N, int tp) {
  // Rows of logits per chunk: at most kClassifierChunkBytes, in equal chunks.
  const size_t Vl = (size_t)cfg.padded_vocab(tp) / tp;
  const size_t max_rows = std::max<size_t>(1, kClassifierChunkBytes / (Vl * sizeof(float)));
  const size_t chunks = ((size_t)N + max_rows - 1) / max_rows;
  return (int)(((size_t)N + chunks - 1) / chunks);
}

// ----------------------------------------------------------------------------
// The family's norm: LayerNorm (gpt2) or RMSNorm (llama)

void GPT::norm_forward(TensorView out, TensorView mean, TensorView rstd, TensorView x,
                       const NormWeights& w, int N) {
  const int C = cfg_.n_embd;
  if (cfg_.llama())
    be_->rmsnorm_forward(out, rstd, x, w.w, N, C, cfg_.norm_eps);
  else
    be_->layernorm_forward(out, mean, rstd, x, w.w, w.b, N, C, cfg_.norm_eps);
}

void GPT::residual_norm_forward(TensorView x, TensorView out, TensorView mean, TensorView rstd,
                                TensorView a, TensorView b, const NormWeights& w, int N) {
  const int C = cfg_.n_embd;
  if (cfg_.llama())
    be_->residual_rmsnorm_forward(x, out, rstd, a, b, w.w, N, C, cfg_.norm_eps);
  else
    be_->residual_layernorm_forward(x, out, mean, rstd, a, b, w.w, w.b, N, C, cfg_.norm_eps);
}

void GPT::norm_apply(TensorView out, TensorView x, TensorView mean, TensorView rstd,
                     const NormWeights& w, int N) {
  if (cfg_.llama())
    be_->rmsnorm_apply(out, x, rstd, w.w, N, cfg_.n_embd);
  else
    be_->layernorm_apply(out, x, mean, rstd, w.w, w.b, N, cfg_.n_embd);
}

void GPT::norm_backward(TensorView dx, const NormWeights& g, TensorView dout, TensorView x,
                        const NormWeights& w, TensorView mean, TensorView rstd, int N) {
  if (cfg_.llama())
    be_->rmsnorm_backward(dx, g.w, dout, x, w.w, rstd, N, cfg_.n_embd);
  else
    be_->layernorm_backward(dx, g.w, g.b, dout, x, w.w, mean, rstd, N, cfg_.n_embd);
}

// ----------------------------------------------------------------------------
// Forward

namespace {
// Elements [first, end) of a view: a column block's start inside a row-major activation.
TensorView from(const TensorView& v, size_t first) { return v.slice(first, v.numel() - first); }
TensorView host_i32(const int32_t* p, size_t n) {
  return TensorView::i32(const_cast<int32_t*>(p), {(int64_t)n});
}
}  // namespace

float GPT::forward(const int32_t* inputs, const int32_t* targets, int B, int T,
                   const int32_t* kv_range) {
  forward_trunk(inputs, targets, B, T, 0, nullptr, kv_range);
  Acts& a = acts_;
  const int N = B * T, C = cfg_.n_embd, Vl = cfg_.padded_vocab(tp_size_) / tp_size_;
  if (!targets) {  // sampling / inspection: every logit, [B,T,Vl]
    ensure_acts(B, T, /*full_logits=*/true);
    be_->matmul_forward(a.logits.view(), a.lnf.view(), w_.head, {}, N, C, Vl, Vl);
    return 0.f;
  }
  return classifier(0.f, /*grad=*/false);
}

// Embedding, the blocks and the final norm: everything before the LM head. With a cache, the
// tokens sit at positions pos0.. and attend to the cache (decoding, B = 1).
void GPT::forward_trunk(const int32_t* inputs, const int32_t* targets, int B, int T, int pos0,
                        KVCache* cache, const int32_t* kv_range) {
  CR_CHECK(B > 0 && T > 0 && pos0 >= 0 && pos0 + T <= cfg_.block_size,
           "B={} T={} at position {}: block_size={}", B, T, pos0, cfg_.block_size);
  const int C = cfg_.n_embd, V = cfg_.vocab_size, P = tp_size_;
  const int Vl = cfg_.padded_vocab(P) / P, v0 = tp_rank_ * Vl;
  const int N = B * T;
  int counted = 0;
  for (int i = 0; i < N; i++) {
    CR_CHECK(inputs[i] >= 0 && inputs[i] < V, "input token {} outside vocabulary {}", inputs[i], V);
    if (targets) {  // a negative target is not counted (loss masks)
      CR_CHECK(targets[i] < V, "target token {} outside vocabulary {}", targets[i], V);
      counted += targets[i] >= 0;
    }
  }
  CR_CHECK(!kv_range || !cache, "an attention key range is for training and evaluation only");
  ensure_acts(B, T);
  sync_compute_weights();
  Acts& a = acts_;
  be_->copy(a.inputs.view(0, N), host_i32(inputs, N));
  if (targets) {
    be_->copy(a.targets.view(0, N), host_i32(targets, N));
    host_targets_.assign(targets, targets + N);
  }
  a.has_targets = targets != nullptr;
  a.counted = counted;
  a.has_range = kv_range != nullptr;
  if (kv_range) be_->copy(a.kv_range.view(0, 2 * (size_t)N), host_i32(kv_range, 2 * (size_t)N));

  // Vocab-parallel embedding; learned positions (gpt2) are added by TP rank 0 only (summed).
  const TensorView wpe =
      w_.wpe.empty() || tp_rank_ != 0 ? TensorView{} : from(w_.wpe, (size_t)pos0 * C);
  be_->embedding_forward(a.x0.view(), a.inputs.view(), w_.wte, wpe, B, T, C, v0, Vl);
  reduce_tp(a.x0.view(), (size_t)N * C, "embedding.fwd");
  norm_forward(ln1_buf(0), a.layers[0].ln1_mean.view(), a.layers[0].ln1_rstd.view(), a.x0.view(),
               w_.layers[0].ln1, N);
  for (int l = 0; l < cfg_.n_layer; l++)
    block_forward(l, l == 0 ? a.x0.view() : a.layers[l - 1].x_out.view(), B, T, pos0, cache);
}

// One block. On entry ln1_buf(l) holds norm_1(x_in) (the previous block's fused residual add
// wrote it); on exit x_out holds the new residual stream and the next norm's output is ready.
void GPT::block_forward(int l, TensorView x_in, int B, int T, int pos0, KVCache* cache) {
  Acts& a = acts_;
  const LayerWeights& w = w_.layers[l];
  LayerActs& la = a.layers[l];
  const Shape s = shape_for(B, T, false);
  const int N = (int)s.N, C = (int)s.C;
  // Row-parallel layers add their (replicated) bias on rank 0 only, before the all-reduce.
  auto row_bias = [&](const TensorView& b) { return tp_rank_ == 0 ? b : TensorView{}; };
  // Attention branch: q | k | v side by side in one row, then attention, then the output
  // projection (row-parallel: all-reduce).
  for (const Projection& p : w.qkv)
    be_->matmul_forward(from(la.qkv.view(), p.col), ln1_buf(l), p.w, p.b, N, C, p.cols, (int)s.Wqkv);
  block_attention(l, B, T, pos0, cache);
  be_->matmul_forward(a.branch.view(), la.atty.view(), w.attn_proj.w, row_bias(w.attn_proj.b), N,
                      (int)s.Cla, C, C);
  reduce_tp(a.branch.view(), (size_t)N * C, "attn.proj.fwd");
  // Each residual add is fused with the norm that reads the new stream: norm_2 after the
  // attention branch, and norm_1 of the next block (the final norm after the last) after the MLP.
  residual_norm_forward(la.x_mid.view(), ln2_buf(l), la.ln2_mean.view(), la.ln2_rstd.view(), x_in,
                        a.branch.view(), w.ln2, N);
  if (!s.llama && !recompute_) {
    // gpt2: the up-projection and its GELU in one call (cuBLASLt's GELU_AUX_BIAS epilogue on a
    // GPU). Not under recompute, which rebuilds the activation with gelu_forward: forward and
    // recompute must produce the same bits.
    const Projection& p = w.fc[0];
    be_->matmul_gelu_forward(act_buf(l), la.fch.view(), ln2_buf(l), p.w, p.b, N, C, p.cols);
  } else {
    for (const Projection& p : w.fc)
      be_->matmul_forward(from(la.fch.view(), p.col), ln2_buf(l), p.w, p.b, N, C, p.cols, (int)s.Wfc);
    mlp_activation(l, N);
  }
  be_->matmul_forward(a.branch.view(), act_buf(l), w.mlp_proj.w, row_bias(w.mlp_proj.b), N,
                      (int)s.Fl, C, C);
  reduce_tp(a.branch.view(), (size_t)N * C, "mlp.proj.fwd");
  const bool last = l + 1 == cfg_.n_layer;
  if (last)
    residual_norm_forward(la.x_out.view(), a.lnf.view(), a.lnf_mean.view(), a.lnf_rstd.view(),
                          la.x_mid.view(), a.branch.view(), w_.lnf, N);
  else
    residual_norm_forward(la.x_out.view(), ln1_buf(l + 1), a.layers[l + 1].ln1_mean.view(),
                          a.layers[l + 1].ln1_rstd.view(), la.x_mid.view(), a.branch.view(),
                          w_.layers[l + 1].ln1, N);
}

// Rotary positions (llama) on q and k, then causal attention: flash-style over the batch, or,
// decoding, one query at a time against the cache after appending this call's keys and values.
void GPT::block_attention(int l, int B, int T, int pos0, KVCache* cache) {
  LayerActs& la = acts_.layers[l];
  const Shape s = shape_for(B, T, false);
  const int H = (int)s.Hl, Hkv = (int)s.Hkvl, hs = (int)s.hs, ld = (int)s.Wqkv;
  if (cfg_.llama())
    be_->rope_forward(la.qkv.view(), B, T, ld, H + Hkv, hs, cfg_.rope_theta, pos0);
  if (!cache) {
    be_->attention_forward(la.atty.view(), la.lse.view(), la.qkv.view(), B, T, H, Hkv, hs,
                           key_range());
    return;
  }
  CR_CHECK(B == cache->batch && pos0 == cache->len,
           "decoding: B={} at position {}, a cache of {} sequences with {} cached", B, pos0,
           cache->batch, cache->len);
  const size_t kv = (size_t)Hkv * hs, seq = (size_t)cfg_.block_size * kv, layer = B * seq;
  const TensorView kc = cache->k.view(l * layer, layer), vc = cache->v.view(l * layer, layer);
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      const size_t row = ((size_t)b * T + t) * ld, at = b * seq + (pos0 + t) * kv;
      be_->copy(kc.slice(at, kv), la.qkv.view(row + (size_t)H * hs, kv));
      be_->copy(vc.slice(at, kv), la.qkv.view(row + (size_t)(H + Hkv) * hs, kv));
    }
  // A bidirectional prefix (prefix-LM prefill): every query sees all of this call's keys.
  be_->attention_decode_rows(la.atty.view(0, (size_t)B * T * H * hs), la.qkv.view(), kc, vc, B, T,
                             pos0, cache->bidirectional, cfg_.block_size, ld, H, Hkv, hs);
}

TensorView GPT::key_range() const {
  return acts_.has_range ? acts_.kv_range.view(0, 2 * (size_t)acts_.B * acts_.T) : TensorView{};
}

// The MLP's nonlinearity: gelu(fc) (gpt2) or silu(gate) * up (llama), into act_buf(l).
void GPT::mlp_activation(int l, int N) {
  const size_t Fl = cfg_.ffn_hidden_size() / tp_size_;
  const TensorView fch = acts_.layers[l].fch.view();
  if (cfg_.llama())
    be_->swiglu_forward(act_buf(l), fch, N, (int)Fl);
  else
    be_->gelu_forward(act_buf(l), fch, (size_t)N * Fl);
}

KVCache GPT::make_cache(int batch) const {
  CR_CHECK(tp_size_ == 1, "generation runs on a whole (tp 1) model");
  CR_CHECK(batch >= 1, "a KV cache for {} sequences", batch);
  const size_t n = (size_t)batch * cfg_.n_layer * cfg_.block_size * cfg_.kv_heads() * cfg_.head_size();
  return KVCache{DeviceBuffer(be_->allocator(), dtype_, n), DeviceBuffer(be_->allocator(), dtype_, n),
                 0, false, batch};
}

const float* GPT::decode(const int32_t* tokens, int n, KVCache& cache, bool prefix) {
  CR_CHECK(cache.batch == 1, "decode() runs one sequence; this cache holds {}", cache.batch);
  CR_CHECK(!prefix || cache.len == 0, "a bidirectional prefix must be the first tokens decoded");
  cache.bidirectional = prefix;
  const float* logits = decode_batch(tokens, 1, n, cache);
  cache.bidirectional = false;
  return logits;
}

const float* GPT::decode_batch(const int32_t* tokens, int B, int n, KVCache& cache) {
  CR_CHECK(tp_size_ == 1, "generation runs on a whole (tp 1) model");
  CR_CHECK(n > 0 && cache.len + n <= cfg_.block_size, "context full: {} + {} tokens > {} (model.block_size)",
           cache.len, n, cfg_.block_size);
  forward_trunk(tokens, nullptr, B, n, cache.len, &cache);
  cache.len += n;
  const int C = cfg_.n_embd, Vp = cfg_.padded_vocab();
  Acts& a = acts_;
  // Each sequence's last position, gathered into the first B rows (row b*n+n-1 -> row b: every
  // source row lies at or past its destination and past every earlier destination).
  if (n > 1)
    for (int b = 0; b < B; b++)
      be_->copy(a.lnf.view((size_t)b * C, C), a.lnf.view(((size_t)b * n + n - 1) * C, C));
  // The LM head over those rows, as many at a time as the classifier's logits buffer holds.
  const int R = (int)shape_for(B, n, false).chunk;
  decode_logits_.resize((size_t)B * Vp);
  for (int r0 = 0; r0 < B; r0 += R) {
    const int rows = std::min(R, B - r0);
    be_->matmul_forward(a.logits.view(0, (size_t)rows * Vp), a.lnf.view((size_t)r0 * C, (size_t)rows * C),
                        w_.head, {}, rows, C, Vp, Vp);
    const float* h = to_host_f32(a.logits.view(0, (size_t)rows * Vp));
    std::copy(h, h + (size_t)rows * Vp, decode_logits_.begin() + (size_t)r0 * Vp);
  }
  return decode_logits_.data();  // for the sampler and the coder
}

// The LM head and the loss, in chunks of rows so the [B*T, V] logits never exist at once. Per
// chunk: logits = norm_f(x) W_head^T; the vocab-parallel cross-entropy (all-reduce(max) and
// all-reduce(sum) of row statistics); with grad, dlogits overwrite the logits in place and give
// this chunk's rows of d norm_f(x) = dlogits W_head (summed over TP shards later, in backward)
// and its share of dW_head += dlogits^T norm_f(x). Returns the mean loss.
float GPT::classifier(float loss_scale, bool grad) {
  Acts& a = acts_;
  const int N = a.B * a.T, C = cfg_.n_embd, V = cfg_.vocab_size, P = tp_size_;
  const int Vl = cfg_.padded_vocab(P) / P, v0 = tp_rank_ * Vl;
  const int n_valid = std::clamp(V - v0, 0, Vl);  // real vocabulary columns in this shard
  const int R = (int)shape_for(a.B, a.T, false).chunk;
  std::vector<float> host(2 * (size_t)R + R);  // row statistics for the loss, on the host
  double total = 0.0;
  for (int r0 = 0; r0 < N; r0 += R) {
    const int n = std::min(R, N - r0);
    const auto tc = std::chrono::steady_clock::now();
    const TensorView logits = a.logits.view(0, (size_t)n * Vl);
    const TensorView mx = a.ce_max.view(r0, n);
    const TensorView sums = a.ce_sums.view(0, 2 * (size_t)n);  // [n] sum exp, then [n] target logit
    const TensorView tgt = a.targets.view(r0, n);
    const TensorView lnf = a.lnf.view((size_t)r0 * C, (size_t)n * C);
    be_->matmul_forward(logits, lnf, w_.head, {}, n, C, Vl, Vl);
    // loss = log(sum exp(l - m)) + m - l_target
    be_->crossentropy_row_max(mx, logits, n, Vl, n_valid);
    reduce_tp(mx, n, "loss.max", /*max_op=*/true);
    be_->crossentropy_row_sums(sums, logits, mx, tgt, n, Vl, v0, n_valid);
    reduce_tp(sums, 2 * (size_t)n, "loss.sums");
    float* hs = host.data();  // [n] sum exp, [n] target logit, [n] row max
    be_->copy(TensorView::f32(hs, {2 * (int64_t)n}), sums);
    be_->copy(TensorView::f32(hs + 2 * n, {(int64_t)n}), mx);
    float* losses = losses_.data() + r0;
    const int32_t* t = host_targets_.data() + r0;
    for (int i = 0; i < n; i++) {
      losses[i] = t[i] < 0 ? 0.f  // not counted
                           : (float)(std::log((double)hs[i]) + ((double)hs[2 * n + i] - (double)hs[n + i]));
      total += losses[i];
    }
    if (!grad) continue;
    timing_.forward += std::chrono::duration<double>(std::chrono::steady_clock::now() - tc).count();
    be_->crossentropy_backward(logits, logits, mx, sums, tgt, n, Vl, v0, n_valid,
                               a.counted > 0 ? loss_scale / a.counted : 0.f);
    be_->matmul_backward(a.dln.view((size_t)r0 * C, (size_t)n * C), g_.head, {}, logits, lnf,
                         w_.head, n, C, Vl, Vl, false);
  }
  return a.counted > 0 ? (float)(total / a.counted) : 0.f;
}

float GPT::forward_backward(const int32_t* inputs, const int32_t* targets, int B, int T,
                            float loss_scale, const int32_t* kv_range) {
  CR_CHECK(targets != nullptr, "forward_backward needs targets");
  const auto t0 = std::chrono::steady_clock::now();
  timing_ = {};
  forward_trunk(inputs, targets, B, T, 0, nullptr, kv_range);
  be_->synchronize();  // timings of an asynchronous backend need its work done
  timing_.forward = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const float loss = classifier(loss_scale, /*grad=*/true);  // adds its forward part
  backward_trunk();
  be_->synchronize();
  timing_.backward =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() - timing_.forward;
  return loss;
}

// ----------------------------------------------------------------------------
// Backward: the forward in reverse. a.dres carries d(loss)/d(residual stream) downwards and is
// updated in place: each norm's backward adds its branch's contribution to it.

void GPT::backward(float loss_scale) {
  CR_CHECK(acts_.B > 0 && acts_.has_targets, "backward() needs a forward() with targets before it");
  classifier(loss_scale, /*grad=*/true);  // recomputes the logits: forward_backward() does not
  backward_trunk();
}

void GPT::backward_trunk() {
  Acts& a = acts_;
  // The activations are consumed (the logits buffer holds dlogits): a second backward needs a
  // fresh forward.
  a.has_targets = false;
  const int B = a.B, T = a.T, N = B * T, C = cfg_.n_embd, P = tp_size_;
  const int Vl = cfg_.padded_vocab(P) / P, v0 = tp_rank_ * Vl;

  // The LM head is column-parallel over the vocabulary: its input gradient (from classifier())
  // is a sum over shards.
  reduce_tp(a.dln.view(), (size_t)N * C, "lm_head.bwd");
  a.dres.zero();
  norm_backward(a.dres.view(), g_.lnf, a.dln.view(), a.layers.back().x_out.view(), w_.lnf,
                a.lnf_mean.view(), a.lnf_rstd.view(), N);
  const std::vector<size_t>& ready = ready_offsets_;
  grads_ready(ready[0]);  // the final norm, and an untied LM head
  for (int l = cfg_.n_layer - 1; l >= 0; l--) {
    block_backward(l, l == 0 ? a.x0.view() : a.layers[l - 1].x_out.view());
    grads_ready(ready[cfg_.n_layer - l]);
  }
  // Vocab-parallel embedding backward is local: this shard's rows; wpe (gpt2) on every rank.
  be_->embedding_backward(g_.wte, g_.wpe, a.dres.view(), a.inputs.view(), B, T, C, v0, Vl);
  grads_ready(0);
}



// One block backward. With recompute, the MLP activation and the norm outputs are rebuilt here
// from what was kept (bit-identical to the forward's).
void GPT::block_backward(int l, TensorView x_in) {
  Acts& a = acts_;
  const LayerWeights& w = w_.layers[l];
  const LayerWeights& g = g_.layers[l];
  LayerActs& la = a.layers[l];
  const Shape s = shape_for(a.B, a.T, false);
  const int B = a.B, T = a.T, N = (int)s.N, C = (int)s.C, Fl = (int)s.Fl;
  // MLP branch: x_out = x_mid + proj(act(fc(norm_2(x_mid)))). gpt2's GELU backward runs in place
  // in dfch; llama's SwiGLU backward reads dact and writes [dgate | dup] into dfch.
  if (recompute_) mlp_activation(l, N);
  const TensorView dact = s.llama ? a.dact.view() : a.dfch.view();
  be_->matmul_backward(dact, g.mlp_proj.w, g.mlp_proj.b, a.dres.view(), act_buf(l), w.mlp_proj.w, N,
                       Fl, C, C, false);
  if (s.llama)
    be_->swiglu_backward(a.dfch.view(), la.fch.view(), dact, N, Fl);
  else
    be_->gelu_backward(a.dfch.view(), la.fch.view(), a.dfch.view(), (size_t)N * Fl);
  if (recompute_) norm_apply(ln2_buf(l), la.x_mid.view(), la.ln2_mean.view(), la.ln2_rstd.view(), w.ln2, N);
  for (size_t i = 0; i < w.fc.size(); i++)
    be_->matmul_backward(a.dln.view(), g.fc[i].w, g.fc[i].b, from(a.dfch.view(), w.fc[i].col),
                         ln2_buf(l), w.fc[i].w, N, C, w.fc[i].cols, (int)s.Wfc, i > 0);
  reduce_tp(a.dln.view(), (size_t)N * C, "mlp.fc.bwd");
  norm_backward(a.dres.view(), g.ln2, a.dln.view(), la.x_mid.view(), w.ln2, la.ln2_mean.view(),
                la.ln2_rstd.view(), N);
  // Attention branch: x_mid = x_in + proj(attn(qkv(norm_1(x_in))))
  be_->matmul_backward(a.dbranch.view(), g.attn_proj.w, g.attn_proj.b, a.dres.view(),
                       la.atty.view(), w.attn_proj.w, N, (int)s.Cla, C, C, false);
  be_->attention_backward(a.dqkv.view(), a.dbranch.view(), la.qkv.view(), la.atty.view(),
                          la.lse.view(), B, T, (int)s.Hl, (int)s.Hkvl, (int)s.hs, key_range());
  if (s.llama)
    be_->rope_backward(a.dqkv.view(), B, T, (int)s.Wqkv, (int)(s.Hl + s.Hkvl), (int)s.hs,
                       cfg_.rope_theta, 0);
  if (recompute_) norm_apply(ln1_buf(l), x_in, la.ln1_mean.view(), la.ln1_rstd.view(), w.ln1, N);
  for (size_t i = 0; i < w.qkv.size(); i++)
    be_->matmul_backward(a.dln.view(), g.qkv[i].w, g.qkv[i].b, from(a.dqkv.view(), w.qkv[i].col),
                         ln1_buf(l), w.qkv[i].w, N, C, w.qkv[i].cols, (int)s.Wqkv, i > 0);
  reduce_tp(a.dln.view(), (size_t)N * C, "attn.qkv.bwd");
  norm_backward(a.dres.view(), g.ln1, a.dln.view(), x_in, w.ln1, la.ln1_mean.view(),
                la.ln1_rstd.view(), N);
}

}  // namespace cr
