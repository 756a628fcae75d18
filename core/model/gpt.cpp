// GPT-2 forward and backward over the CPU ops, in the order of a training step.
#include "core/model/gpt.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "core/backend/cpu/ops.h"
#include "core/common/error.h"
#include "core/common/rng.h"

namespace cr {

// ----------------------------------------------------------------------------
// Parameter layout

ParamLayout::ParamLayout(const ModelConfig& cfg, int tp_rank, int tp) : tp_rank_(tp_rank), tp_(tp) {
  CR_CHECK(tp >= 1 && tp_rank >= 0 && tp_rank < tp, "tp rank {} of {}", tp_rank, tp);
  const int64_t C = cfg.n_embd, Vp = cfg.padded_vocab(tp);
  add("wte", {Vp, C}, 0, true);
  add("wpe", {cfg.block_size, C}, -1, false);
  for (int l = 0; l < cfg.n_layer; l++) {
    const std::string p = "h." + std::to_string(l) + ".";
    add(p + "ln_1.weight", {C}, -1, false);
    add(p + "ln_1.bias", {C}, -1, false);
    add(p + "attn.qkv.weight", {3, C, C}, 1, true);
    add(p + "attn.qkv.bias", {3, C}, 1, false);
    add(p + "attn.proj.weight", {C, C}, 1, true);
    add(p + "attn.proj.bias", {C}, -1, false);
    add(p + "ln_2.weight", {C}, -1, false);
    add(p + "ln_2.bias", {C}, -1, false);
    add(p + "mlp.fc.weight", {4 * C, C}, 0, true);
    add(p + "mlp.fc.bias", {4 * C}, 0, false);
    add(p + "mlp.proj.weight", {C, 4 * C}, 1, true);
    add(p + "mlp.proj.bias", {C}, -1, false);
  }
  add("ln_f.weight", {C}, -1, false);
  add("ln_f.bias", {C}, -1, false);
}

void ParamLayout::add(std::string name, std::vector<int64_t> global_shape, int shard_dim, bool decay) {
  std::vector<int64_t> shape = global_shape;
  if (shard_dim >= 0) {
    CR_CHECK(shape[shard_dim] % tp_ == 0, "{} dim {} = {} does not split over {} ranks", name,
             shard_dim, shape[shard_dim], tp_);
    shape[shard_dim] /= tp_;
  }
  size_t n = 1;
  for (auto d : shape) n *= (size_t)d;
  tensors_.push_back({std::move(name), std::move(shape), std::move(global_shape),
                      shard_dim, total_, n, decay});
  total_ += n;
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

const ParamTensor& ParamLayout::at(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return t;
  CR_THROW("no parameter named '{}'", name);
}

Weights bind_weights(const ModelConfig& cfg, const ParamLayout& layout, float* base) {
  auto p = [&](const std::string& n) { return base + layout.at(n).offset; };
  Weights w;
  w.wte = p("wte");
  w.wpe = p("wpe");
  for (int l = 0; l < cfg.n_layer; l++) {
    const std::string h = "h." + std::to_string(l) + ".";
    w.layers.push_back({p(h + "ln_1.weight"), p(h + "ln_1.bias"), p(h + "attn.qkv.weight"),
                        p(h + "attn.qkv.bias"), p(h + "attn.proj.weight"),
                        p(h + "attn.proj.bias"), p(h + "ln_2.weight"), p(h + "ln_2.bias"),
                        p(h + "mlp.fc.weight"), p(h + "mlp.fc.bias"), p(h + "mlp.proj.weight"),
                        p(h + "mlp.proj.bias")});
  }
  w.lnfw = p("ln_f.weight");
  w.lnfb = p("ln_f.bias");
  return w;
}

// ----------------------------------------------------------------------------
// Construction and initialisation

GPT::GPT(const ModelConfig& cfg, TensorParallelComm* tp)
    : cfg_(cfg),
      tp_(tp),
      tp_rank_(tp ? tp->rank() : 0),
      tp_size_(tp ? tp->size() : 1),
      layout_(cfg, tp_rank_, tp_size_) {
  CR_CHECK(cfg.n_layer > 0 && cfg.n_head > 0 && cfg.n_embd > 0 && cfg.block_size > 0 &&
               cfg.vocab_size > 0,
           "model config must be positive");
  CR_CHECK(cfg.n_embd % cfg.n_head == 0, "n_embd {} % n_head {}", cfg.n_embd, cfg.n_head);
  CR_CHECK(cfg.n_head % tp_size_ == 0, "n_head {} % tp {}", cfg.n_head, tp_size_);
  params_.resize(layout_.total());
  grads_.resize(layout_.total());
  w_ = bind_weights(cfg_, layout_, params_.data());
  g_ = bind_weights(cfg_, layout_, grads_.data());
}

void GPT::init(uint64_t seed) {
  // Draw the whole (tp 1) model in layout order, then keep this rank's shard. Only the real
  // vocabulary rows of wte are drawn, so the stream does not depend on the padding.
  const ParamLayout full_layout(cfg_);
  std::vector<float> full(full_layout.total(), 0.f);
  Rng rng(seed);
  const float residual_std = 0.02f / std::sqrt(2.f * cfg_.n_layer);
  for (const auto& t : full_layout.tensors()) {
    float* p = full.data() + t.offset;
    const bool is_ln = t.name.find("ln_") != std::string::npos;
    const bool is_bias = t.name.size() >= 5 && t.name.compare(t.name.size() - 5, 5, ".bias") == 0;
    if (is_ln && !is_bias) {
      std::fill(p, p + t.numel, 1.f);
    } else if (!is_bias) {
      const bool residual = t.name.find(".proj.weight") != std::string::npos;
      const float std = residual ? residual_std : 0.02f;
      const size_t n = t.name == "wte" ? (size_t)cfg_.vocab_size * cfg_.n_embd : t.numel;
      for (size_t i = 0; i < n; i++) p[i] = (float)(rng.normal() * std);
    }
  }
  load_full(full.data());
}

void GPT::load_full(const float* full) {
  const ParamLayout full_layout(cfg_);
  const size_t C = cfg_.n_embd;
  for (const auto& t : layout_.tensors()) {
    const float* src = full + full_layout.at(t.name).offset;
    float* dst = params_.data() + t.offset;
    if (t.name == "wte") {  // rows past the real vocabulary are padding: zero
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
  }
}

std::vector<float> GPT::gather_full() const {
  const ParamLayout full_layout(cfg_);
  std::vector<float> full(full_layout.total(), 0.f);
  std::vector<float> all;
  const size_t C = cfg_.n_embd;
  for (const auto& t : layout_.tensors()) {
    const float* src = params_.data() + t.offset;
    float* dst = full.data() + full_layout.at(t.name).offset;
    if (tp_size_ == 1 || t.shard_dim < 0) {
      const size_t n = std::min(t.numel, full_layout.at(t.name).numel);  // wte: padding differs
      std::memcpy(dst, src, n * sizeof(float));
      continue;
    }
    all.resize(t.numel * tp_size_);
    tp_->all_gather(src, all.data(), t.numel, "gather_params");
    if (t.name == "wte") {  // shards are consecutive row blocks: keep the real rows
      std::memcpy(dst, all.data(), (size_t)cfg_.vocab_size * C * sizeof(float));
      continue;
    }
    for (int r = 0; r < tp_size_; r++)
      copy_shard_in(all.data() + r * t.numel, t.global_shape, t.shard_dim, r, tp_size_, dst);
  }
  return full;
}

void GPT::reduce_tp(float* buf, size_t n, const char* what) {
  if (tp_size_ > 1) tp_->all_reduce_sum(buf, n, what);
}

// ----------------------------------------------------------------------------
// Activations

ActivationPlan GPT::activation_plan(const ModelConfig& cfg, int B, int T, int tp, bool recompute) {
  // Floats, at this TP rank's widths; ensure_acts() allocates exactly this.
  const size_t N = (size_t)B * T, C = cfg.n_embd, Cl = C / tp, Hl = cfg.n_head / tp;
  const size_t Fl = 4 * C / tp, Vl = (size_t)cfg.padded_vocab(tp) / tp;
  const size_t chunk = (size_t)classifier_chunk_rows(cfg, (int)N, tp);
  ActivationPlan p;
  p.recompute = recompute;
  // ln_1 out, qkv, attention out + lse, x_mid, ln_2 out, fc out, gelu out, x_out, LN stats
  p.per_layer = (recompute ? 0 : N * C) + N * 3 * Cl + N * Cl + B * Hl * (size_t)T + N * C +
                (recompute ? 0 : N * C) + N * Fl + (recompute ? 0 : N * Fl) + N * C + 4 * N;
  p.layers = p.per_layer * cfg.n_layer;
  p.classifier = chunk * Vl + 2 * chunk + N;  // logits chunk, its row sums; row max of all rows
  // x0, the shared branch output, ln_f + stats, losses, token ids (int32, counted as floats),
  // the recompute buffers, and backward's scratch (dres, dbranch, dqkv, dfch, dln).
  p.other = N * C + N * C + N * C + 2 * N + N + 2 * N + (recompute ? 2 * N * C + N * Fl : 0) +
            N * C + N * Cl + N * 3 * Cl + N * Fl + N * C;
  return p;
}

void GPT::ensure_acts(int B, int T) {
  // Local (per TP rank) widths: heads, channels of those heads, MLP hidden, vocabulary shard.
  const size_t N = (size_t)B * T, C = cfg_.n_embd, Cl = C / tp_size_, Hl = cfg_.n_head / tp_size_;
  const size_t Fl = 4 * C / tp_size_, Vl = (size_t)cfg_.padded_vocab(tp_size_) / tp_size_;
  const size_t att = (size_t)B * Hl * T;  // attention log-sum-exp rows
  if (N <= acts_.cap_rows && att <= acts_.cap_att) {  // every buffer is flat: just re-stride
    acts_.B = B;
    acts_.T = T;
    return;
  }
  // Grow to the larger of old and new needs, so alternating shapes never thrash.
  const size_t rows = std::max(N, acts_.cap_rows), att_cap = std::max(att, acts_.cap_att);
  Acts a;
  a.B = B;
  a.T = T;
  a.cap_rows = rows;
  a.cap_att = att_cap;
  a.x0.resize(rows * C);
  a.layers.resize(cfg_.n_layer);
  const size_t saved_ln = recompute_ ? 0 : rows * C, saved_gelu = recompute_ ? 0 : rows * Fl;
  for (auto& l : a.layers) {
    l.ln1.resize(saved_ln), l.ln1_mean.resize(rows), l.ln1_rstd.resize(rows);
    l.qkv.resize(rows * 3 * Cl), l.lse.resize(att_cap), l.atty.resize(rows * Cl);
    l.x_mid.resize(rows * C);
    l.ln2.resize(saved_ln), l.ln2_mean.resize(rows), l.ln2_rstd.resize(rows);
    l.fch.resize(rows * Fl), l.fch_gelu.resize(saved_gelu);
    l.x_out.resize(rows * C);
  }
  a.branch.resize(rows * C);
  if (recompute_) a.rc_ln1.resize(rows * C), a.rc_ln2.resize(rows * C), a.rc_gelu.resize(rows * Fl);
  a.lnf.resize(rows * C), a.lnf_mean.resize(rows), a.lnf_rstd.resize(rows);
  const size_t chunk = (size_t)classifier_chunk_rows(cfg_, (int)rows, tp_size_);
  a.logits.resize(chunk * Vl), a.losses.resize(rows);
  a.ce_max.resize(rows), a.ce_sums.resize(2 * chunk);
  a.dres.resize(rows * C), a.dbranch.resize(rows * Cl), a.dqkv.resize(rows * 3 * Cl);
  a.dfch.resize(rows * Fl), a.dln.resize(rows * C);
  a.inputs.resize(rows), a.targets.resize(rows);
  acts_ = std::move(a);
}

// ----------------------------------------------------------------------------
// Forward

float GPT::forward(const int32_t* inputs, const int32_t* targets, int B, int T) {
  forward_trunk(inputs, targets, B, T);
  Acts& a = acts_;
  const int N = B * T, C = cfg_.n_embd, Vl = cfg_.padded_vocab(tp_size_) / tp_size_;
  if (!targets) {  // sampling / inspection: every logit, [B,T,Vl]
    if (a.logits.size() < (size_t)N * Vl) a.logits.resize((size_t)N * Vl);
    cpu::matmul_forward(a.logits.data(), a.lnf.data(), w_.wte, nullptr, N, C, Vl);
    return 0.f;
  }
  return classifier(0.f, /*grad=*/false);
}

// Embedding, the blocks and ln_f: everything before the LM head.
void GPT::forward_trunk(const int32_t* inputs, const int32_t* targets, int B, int T) {
  CR_CHECK(B > 0 && T > 0 && T <= cfg_.block_size, "B={} T={} block_size={}", B, T,
           cfg_.block_size);
  const int C = cfg_.n_embd, V = cfg_.vocab_size, P = tp_size_;
  const int Cl = C / P, Hl = cfg_.n_head / P, Fl = 4 * C / P;
  const int Vl = cfg_.padded_vocab(P) / P, v0 = tp_rank_ * Vl;
  const int N = B * T;
  for (int i = 0; i < N; i++) {
    CR_CHECK(inputs[i] >= 0 && inputs[i] < V, "input token {} outside vocabulary {}", inputs[i], V);
    if (targets)
      CR_CHECK(targets[i] >= 0 && targets[i] < V, "target token {} outside vocabulary {}",
               targets[i], V);
  }
  ensure_acts(B, T);
  Acts& a = acts_;
  std::memcpy(a.inputs.data(), inputs, N * sizeof(int32_t));
  if (targets) std::memcpy(a.targets.data(), targets, N * sizeof(int32_t));
  a.has_targets = targets != nullptr;

  // Vocab-parallel embedding; the position term is added by TP rank 0 only (it is summed).
  cpu::embedding_forward(a.x0.data(), inputs, w_.wte, tp_rank_ == 0 ? w_.wpe : nullptr, B, T, C,
                         v0, Vl);
  reduce_tp(a.x0.data(), (size_t)N * C, "embedding.fwd");
  // Row-parallel layers add their (replicated) bias on rank 0 only, before the all-reduce.
  auto row_bias = [&](const float* b) { return tp_rank_ == 0 ? b : nullptr; };
  // Each residual add is fused with the LayerNorm that reads the new stream: ln_2 after the
  // attention branch, and ln_1 of the next block (ln_f after the last) after the MLP branch.
  const float* x = a.x0.data();
  cpu::layernorm_forward(ln1_buf(0), a.layers[0].ln1_mean.data(), a.layers[0].ln1_rstd.data(), x,
                         w_.layers[0].ln1w, w_.layers[0].ln1b, N, C, cfg_.ln_eps());
  for (int l = 0; l < cfg_.n_layer; l++) {
    const LayerWeights& w = w_.layers[l];
    LayerActs& la = a.layers[l];
    cpu::matmul_forward(la.qkv.data(), ln1_buf(l), w.qkvw, w.qkvb, N, C, 3 * Cl);
    cpu::attention_forward(la.atty.data(), la.lse.data(), la.qkv.data(), B, T, Cl, Hl);
    cpu::matmul_forward(a.branch.data(), la.atty.data(), w.attprojw, row_bias(w.attprojb), N, Cl,
                        C);
    reduce_tp(a.branch.data(), (size_t)N * C, "attn.proj.fwd");
    cpu::residual_layernorm_forward(la.x_mid.data(), ln2_buf(l), la.ln2_mean.data(),
                                    la.ln2_rstd.data(), x, a.branch.data(), w.ln2w, w.ln2b, N, C,
                                    cfg_.ln_eps());
    cpu::matmul_forward(la.fch.data(), ln2_buf(l), w.fcw, w.fcb, N, C, Fl);
    cpu::gelu_forward(gelu_buf(l), la.fch.data(), (size_t)N * Fl);
    cpu::matmul_forward(a.branch.data(), gelu_buf(l), w.fcprojw, row_bias(w.fcprojb), N, Fl, C);
    reduce_tp(a.branch.data(), (size_t)N * C, "mlp.proj.fwd");
    const bool last = l + 1 == cfg_.n_layer;
    LayerActs* next = last ? nullptr : &a.layers[l + 1];
    cpu::residual_layernorm_forward(
        la.x_out.data(), last ? a.lnf.data() : ln1_buf(l + 1),
        last ? a.lnf_mean.data() : next->ln1_mean.data(),
        last ? a.lnf_rstd.data() : next->ln1_rstd.data(), la.x_mid.data(), a.branch.data(),
        last ? w_.lnfw : w_.layers[l + 1].ln1w, last ? w_.lnfb : w_.layers[l + 1].ln1b, N, C,
        cfg_.ln_eps());
    x = la.x_out.data();
  }
}

int GPT::classifier_chunk_rows(const ModelConfig& cfg, int N, int tp) {
  // Rows of logits per chunk: at most kClassifierChunkBytes, in equal chunks.
  const size_t Vl = (size_t)cfg.padded_vocab(tp) / tp;
  const size_t max_rows = std::max<size_t>(1, kClassifierChunkBytes / (Vl * sizeof(float)));
  const size_t chunks = ((size_t)N + max_rows - 1) / max_rows;
  return (int)(((size_t)N + chunks - 1) / chunks);
}

// The LM head and the loss, in chunks of rows so the [B*T, V] logits never exist at once. Per
// chunk: logits = ln_f(x) wte^T; the vocab-parallel cross-entropy (all-reduce(max) and
// all-reduce(sum) of row statistics); with grad, dlogits overwrite the logits in place and give
// this chunk's rows of d ln_f(x) = dlogits wte (summed over TP shards later, in backward) and
// its share of dwte += dlogits^T ln_f(x). Returns the mean loss.
float GPT::classifier(float loss_scale, bool grad) {
  Acts& a = acts_;
  const int N = a.B * a.T, C = cfg_.n_embd, V = cfg_.vocab_size, P = tp_size_;
  const int Vl = cfg_.padded_vocab(P) / P, v0 = tp_rank_ * Vl;
  const int n_valid = std::clamp(V - v0, 0, Vl);  // real vocabulary columns in this shard
  const int R = chunk_rows_override_ > 0 ? std::min(chunk_rows_override_, N)
                                         : classifier_chunk_rows(cfg_, N, P);
  if (a.logits.size() < (size_t)R * Vl) a.logits.resize((size_t)R * Vl);
  double total = 0.0;
  for (int r0 = 0; r0 < N; r0 += R) {
    const int n = std::min(R, N - r0);
    const auto tc = std::chrono::steady_clock::now();
    float* logits = a.logits.data();
    float* mx = a.ce_max.data() + r0;
    float* sums = a.ce_sums.data();  // [n] sum exp, then [n] target logit
    const int32_t* tgt = a.targets.data() + r0;
    const float* lnf = a.lnf.data() + (size_t)r0 * C;
    cpu::matmul_forward(logits, lnf, w_.wte, nullptr, n, C, Vl);
    // loss = log(sum exp(l - m)) + m - l_target
    cpu::crossentropy_row_max(mx, logits, n, Vl, n_valid);
    if (P > 1) tp_->all_reduce_max(mx, n, "loss.max");
    cpu::crossentropy_row_sums(sums, logits, mx, tgt, n, Vl, v0, n_valid);
    reduce_tp(sums, 2 * (size_t)n, "loss.sums");
    for (int i = 0; i < n; i++) {
      a.losses[r0 + i] = (float)(std::log((double)sums[i]) + ((double)mx[i] - (double)sums[n + i]));
      total += a.losses[r0 + i];
    }
    if (!grad) continue;
    timing_.forward += std::chrono::duration<double>(std::chrono::steady_clock::now() - tc).count();
    cpu::crossentropy_backward(logits, logits, mx, sums, tgt, n, Vl, v0, n_valid, loss_scale / N);
    cpu::matmul_backward(a.dln.data() + (size_t)r0 * C, g_.wte, nullptr, logits, lnf, w_.wte, n, C,
                         Vl);
  }
  return (float)(total / N);
}

float GPT::forward_backward(const int32_t* inputs, const int32_t* targets, int B, int T,
                            float loss_scale) {
  CR_CHECK(targets != nullptr, "forward_backward needs targets");
  const auto t0 = std::chrono::steady_clock::now();
  timing_ = {};
  forward_trunk(inputs, targets, B, T);
  timing_.forward = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const float loss = classifier(loss_scale, /*grad=*/true);  // adds its forward part
  backward_trunk();
  timing_.backward =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() - timing_.forward;
  return loss;
}

// ----------------------------------------------------------------------------
// Backward: the forward in reverse. a.dres carries d(loss)/d(residual stream) downwards and is
// updated in place: each LayerNorm backward adds its branch's contribution to it.

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
  const int B = a.B, T = a.T, N = B * T;
  const int C = cfg_.n_embd, P = tp_size_;
  const int Cl = C / P, Hl = cfg_.n_head / P, Fl = 4 * C / P;
  const int Vl = cfg_.padded_vocab(P) / P, v0 = tp_rank_ * Vl;

  // The LM head is column-parallel over the vocabulary: its input gradient (from classifier())
  // is a sum over shards.
  reduce_tp(a.dln.data(), (size_t)N * C, "lm_head.bwd");
  const float* x_last = a.layers.back().x_out.data();
  a.dres.zero();
  cpu::layernorm_backward(a.dres.data(), g_.lnfw, g_.lnfb, a.dln.data(), x_last, w_.lnfw,
                          a.lnf_mean.data(), a.lnf_rstd.data(), N, C);

  for (int l = cfg_.n_layer - 1; l >= 0; l--) {
    const LayerWeights& w = w_.layers[l];
    const LayerWeights& g = g_.layers[l];
    LayerActs& la = a.layers[l];
    const float* x_in = l == 0 ? a.x0.data() : a.layers[l - 1].x_out.data();
    // MLP branch: x_out = x_mid + proj(gelu(fc(ln_2(x_mid)))). With recompute, the GELU and
    // LayerNorm outputs are rebuilt here from what was kept (bit-identical to the forward's).
    if (recompute_) cpu::gelu_forward(gelu_buf(l), la.fch.data(), (size_t)N * Fl);
    cpu::matmul_backward(a.dfch.data(), g.fcprojw, g.fcprojb, a.dres.data(), gelu_buf(l),
                         w.fcprojw, N, Fl, C);
    cpu::gelu_backward(a.dfch.data(), la.fch.data(), a.dfch.data(), (size_t)N * Fl);
    if (recompute_)
      cpu::layernorm_apply(ln2_buf(l), la.x_mid.data(), la.ln2_mean.data(), la.ln2_rstd.data(),
                           w.ln2w, w.ln2b, N, C);
    cpu::matmul_backward(a.dln.data(), g.fcw, g.fcb, a.dfch.data(), ln2_buf(l), w.fcw, N, C, Fl);
    reduce_tp(a.dln.data(), (size_t)N * C, "mlp.fc.bwd");
    cpu::layernorm_backward(a.dres.data(), g.ln2w, g.ln2b, a.dln.data(), la.x_mid.data(), w.ln2w,
                            la.ln2_mean.data(), la.ln2_rstd.data(), N, C);
    // Attention branch: x_mid = x_in + proj(attn(qkv(ln_1(x_in))))
    cpu::matmul_backward(a.dbranch.data(), g.attprojw, g.attprojb, a.dres.data(),
                         la.atty.data(), w.attprojw, N, Cl, C);
    cpu::attention_backward(a.dqkv.data(), a.dbranch.data(), la.qkv.data(), la.atty.data(),
                            la.lse.data(), B, T, Cl, Hl);
    if (recompute_)
      cpu::layernorm_apply(ln1_buf(l), x_in, la.ln1_mean.data(), la.ln1_rstd.data(), w.ln1w,
                           w.ln1b, N, C);
    cpu::matmul_backward(a.dln.data(), g.qkvw, g.qkvb, a.dqkv.data(), ln1_buf(l), w.qkvw, N, C,
                         3 * Cl);
    reduce_tp(a.dln.data(), (size_t)N * C, "attn.qkv.bwd");
    cpu::layernorm_backward(a.dres.data(), g.ln1w, g.ln1b, a.dln.data(), x_in, w.ln1w,
                            la.ln1_mean.data(), la.ln1_rstd.data(), N, C);
  }
  // Vocab-parallel embedding backward is local: this shard's rows; wpe on every rank.
  cpu::embedding_backward(g_.wte, g_.wpe, a.dres.data(), a.inputs.data(), B, T, C, v0, Vl);
}

}  // namespace cr
