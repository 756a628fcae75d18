// GPT-2 forward and backward over the CPU ops, in the order of a training step.
#include "core/model/gpt.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/backend/cpu/ops.h"
#include "core/common/error.h"
#include "core/common/rng.h"

namespace cr {

// ----------------------------------------------------------------------------
// Parameter layout

ParamLayout::ParamLayout(const ModelConfig& cfg) {
  const int64_t C = cfg.n_embd, Vp = cfg.padded_vocab();
  add("wte", {Vp, C}, true);
  add("wpe", {cfg.block_size, C}, false);
  for (int l = 0; l < cfg.n_layer; l++) {
    const std::string p = "h." + std::to_string(l) + ".";
    add(p + "ln_1.weight", {C}, false);
    add(p + "ln_1.bias", {C}, false);
    add(p + "attn.qkv.weight", {3 * C, C}, true);
    add(p + "attn.qkv.bias", {3 * C}, false);
    add(p + "attn.proj.weight", {C, C}, true);
    add(p + "attn.proj.bias", {C}, false);
    add(p + "ln_2.weight", {C}, false);
    add(p + "ln_2.bias", {C}, false);
    add(p + "mlp.fc.weight", {4 * C, C}, true);
    add(p + "mlp.fc.bias", {4 * C}, false);
    add(p + "mlp.proj.weight", {C, 4 * C}, true);
    add(p + "mlp.proj.bias", {C}, false);
  }
  add("ln_f.weight", {C}, false);
  add("ln_f.bias", {C}, false);
}

void ParamLayout::add(std::string name, std::vector<int64_t> shape, bool decay) {
  size_t n = 1;
  for (auto d : shape) n *= (size_t)d;
  tensors_.push_back({std::move(name), std::move(shape), total_, n, decay});
  total_ += n;
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

GPT::GPT(const ModelConfig& cfg) : cfg_(cfg), layout_(cfg) {
  CR_CHECK(cfg.n_layer > 0 && cfg.n_head > 0 && cfg.n_embd > 0 && cfg.block_size > 0 &&
               cfg.vocab_size > 0,
           "model config must be positive");
  CR_CHECK(cfg.n_embd % cfg.n_head == 0, "n_embd {} % n_head {}", cfg.n_embd, cfg.n_head);
  params_.resize(layout_.total());
  grads_.resize(layout_.total());
  w_ = bind_weights(cfg_, layout_, params_.data());
  g_ = bind_weights(cfg_, layout_, grads_.data());
}

void GPT::init(uint64_t seed) {
  Rng rng(seed);
  const float residual_std = 0.02f / std::sqrt(2.f * cfg_.n_layer);
  for (const auto& t : layout_.tensors()) {
    float* p = params_.data() + t.offset;
    const bool is_ln = t.name.find("ln_") != std::string::npos;
    const bool is_bias = t.name.size() >= 5 && t.name.compare(t.name.size() - 5, 5, ".bias") == 0;
    if (is_ln && !is_bias) {
      for (size_t i = 0; i < t.numel; i++) p[i] = 1.f;
    } else if (is_bias) {
      std::memset(p, 0, t.numel * sizeof(float));
    } else {
      const bool residual = t.name.find(".proj.weight") != std::string::npos;
      const float std = residual ? residual_std : 0.02f;
      for (size_t i = 0; i < t.numel; i++) p[i] = (float)(rng.normal() * std);
    }
  }
  const size_t C = cfg_.n_embd;
  std::memset(w_.wte + (size_t)cfg_.vocab_size * C, 0,
              (size_t)(cfg_.padded_vocab() - cfg_.vocab_size) * C * sizeof(float));
}

// ----------------------------------------------------------------------------
// Activations

size_t GPT::activation_bytes(const ModelConfig& cfg, int B, int T) {
  const size_t N = (size_t)B * T, C = cfg.n_embd, H = cfg.n_head;
  const size_t per_layer = N * C * 8 + N * 4 + N * 3 * C + B * H * (size_t)T * T + N * 4 * C * 2;
  const size_t total = N * C + cfg.n_layer * per_layer + N * C + 2 * N +
                       N * (size_t)cfg.padded_vocab() + N +
                       /*scratch*/ N * C * 3 + N * 3 * C + N * 4 * C + 2 * N;
  return total * sizeof(float);
}

void GPT::ensure_acts(int B, int T) {
  const size_t N = (size_t)B * T, C = cfg_.n_embd, H = cfg_.n_head;
  const size_t att = (size_t)B * H * T * T;
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
  for (auto& l : a.layers) {
    l.ln1.resize(rows * C), l.ln1_mean.resize(rows), l.ln1_rstd.resize(rows);
    l.qkv.resize(rows * 3 * C), l.att.resize(att_cap), l.atty.resize(rows * C);
    l.attproj.resize(rows * C), l.x_mid.resize(rows * C);
    l.ln2.resize(rows * C), l.ln2_mean.resize(rows), l.ln2_rstd.resize(rows);
    l.fch.resize(rows * 4 * C), l.fch_gelu.resize(rows * 4 * C), l.fcproj.resize(rows * C);
    l.x_out.resize(rows * C);
  }
  a.lnf.resize(rows * C), a.lnf_mean.resize(rows), a.lnf_rstd.resize(rows);
  a.logits.resize(rows * cfg_.padded_vocab()), a.losses.resize(rows);
  a.dres.resize(rows * C), a.dbranch.resize(rows * C), a.dqkv.resize(rows * 3 * C);
  a.dfch.resize(rows * 4 * C), a.dln.resize(rows * C);
  a.inputs.resize(rows), a.targets.resize(rows);
  acts_ = std::move(a);
}

// ----------------------------------------------------------------------------
// Forward

float GPT::forward(const int32_t* inputs, const int32_t* targets, int B, int T) {
  CR_CHECK(B > 0 && T > 0 && T <= cfg_.block_size, "B={} T={} block_size={}", B, T,
           cfg_.block_size);
  const int C = cfg_.n_embd, H = cfg_.n_head, V = cfg_.vocab_size, Vp = cfg_.padded_vocab();
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

  cpu::embedding_forward(a.x0.data(), inputs, w_.wte, w_.wpe, B, T, C);
  const float* x = a.x0.data();
  for (int l = 0; l < cfg_.n_layer; l++) {
    const LayerWeights& w = w_.layers[l];
    LayerActs& la = a.layers[l];
    cpu::layernorm_forward(la.ln1.data(), la.ln1_mean.data(), la.ln1_rstd.data(), x, w.ln1w,
                           w.ln1b, N, C, cfg_.ln_eps());
    cpu::matmul_forward(la.qkv.data(), la.ln1.data(), w.qkvw, w.qkvb, N, C, 3 * C);
    cpu::attention_forward(la.atty.data(), la.att.data(), la.qkv.data(), B, T, C, H);
    cpu::matmul_forward(la.attproj.data(), la.atty.data(), w.attprojw, w.attprojb, N, C, C);
    cpu::residual_forward(la.x_mid.data(), x, la.attproj.data(), (size_t)N * C);
    cpu::layernorm_forward(la.ln2.data(), la.ln2_mean.data(), la.ln2_rstd.data(),
                           la.x_mid.data(), w.ln2w, w.ln2b, N, C, cfg_.ln_eps());
    cpu::matmul_forward(la.fch.data(), la.ln2.data(), w.fcw, w.fcb, N, C, 4 * C);
    cpu::gelu_forward(la.fch_gelu.data(), la.fch.data(), (size_t)N * 4 * C);
    cpu::matmul_forward(la.fcproj.data(), la.fch_gelu.data(), w.fcprojw, w.fcprojb, N, 4 * C, C);
    cpu::residual_forward(la.x_out.data(), la.x_mid.data(), la.fcproj.data(), (size_t)N * C);
    x = la.x_out.data();
  }
  cpu::layernorm_forward(a.lnf.data(), a.lnf_mean.data(), a.lnf_rstd.data(), x, w_.lnfw,
                         w_.lnfb, N, C, cfg_.ln_eps());
  cpu::matmul_forward(a.logits.data(), a.lnf.data(), w_.wte, nullptr, N, C, Vp);
  if (!targets) return 0.f;

  cpu::crossentropy_forward_backward(a.losses.data(), nullptr, a.logits.data(), targets, N, V, Vp,
                                     0.f);
  double sum = 0.0;
  for (int i = 0; i < N; i++) sum += a.losses[i];
  return (float)(sum / N);
}

// ----------------------------------------------------------------------------
// Backward: the forward in reverse. a.dres carries d(loss)/d(residual stream) downwards and is
// updated in place: each LayerNorm backward adds its branch's contribution to it.

void GPT::backward(float loss_scale) {
  Acts& a = acts_;
  CR_CHECK(a.B > 0 && a.has_targets, "backward() needs a forward() with targets before it");
  // The logits buffer becomes dlogits below: a second backward() needs a fresh forward().
  a.has_targets = false;
  const int B = a.B, T = a.T, N = B * T;
  const int C = cfg_.n_embd, H = cfg_.n_head, V = cfg_.vocab_size, Vp = cfg_.padded_vocab();

  // dlogits overwrite the logits in place.
  float* dlogits = a.logits.data();
  cpu::crossentropy_forward_backward(a.losses.data(), dlogits, a.logits.data(),
                                     a.targets.data(), N, V, Vp, loss_scale / N);
  cpu::matmul_backward(a.dln.data(), g_.wte, nullptr, dlogits, a.lnf.data(), w_.wte, N, C, Vp);
  const float* x_last = cfg_.n_layer > 0 ? a.layers.back().x_out.data() : a.x0.data();
  a.dres.zero();
  cpu::layernorm_backward(a.dres.data(), g_.lnfw, g_.lnfb, a.dln.data(), x_last, w_.lnfw,
                          a.lnf_mean.data(), a.lnf_rstd.data(), N, C);

  for (int l = cfg_.n_layer - 1; l >= 0; l--) {
    const LayerWeights& w = w_.layers[l];
    const LayerWeights& g = g_.layers[l];
    LayerActs& la = a.layers[l];
    const float* x_in = l == 0 ? a.x0.data() : a.layers[l - 1].x_out.data();
    // MLP branch: x_out = x_mid + proj(gelu(fc(ln_2(x_mid))))
    cpu::matmul_backward(a.dfch.data(), g.fcprojw, g.fcprojb, a.dres.data(), la.fch_gelu.data(),
                         w.fcprojw, N, 4 * C, C);
    cpu::gelu_backward(a.dfch.data(), la.fch.data(), a.dfch.data(), (size_t)N * 4 * C);
    cpu::matmul_backward(a.dln.data(), g.fcw, g.fcb, a.dfch.data(), la.ln2.data(), w.fcw, N, C,
                         4 * C);
    cpu::layernorm_backward(a.dres.data(), g.ln2w, g.ln2b, a.dln.data(), la.x_mid.data(), w.ln2w,
                            la.ln2_mean.data(), la.ln2_rstd.data(), N, C);
    // Attention branch: x_mid = x_in + proj(attn(qkv(ln_1(x_in))))
    cpu::matmul_backward(a.dbranch.data(), g.attprojw, g.attprojb, a.dres.data(),
                         la.atty.data(), w.attprojw, N, C, C);
    cpu::attention_backward(a.dqkv.data(), a.dbranch.data(), la.qkv.data(), la.att.data(), B, T,
                            C, H);
    cpu::matmul_backward(a.dln.data(), g.qkvw, g.qkvb, a.dqkv.data(), la.ln1.data(), w.qkvw, N,
                         C, 3 * C);
    cpu::layernorm_backward(a.dres.data(), g.ln1w, g.ln1b, a.dln.data(), x_in, w.ln1w,
                            la.ln1_mean.data(), la.ln1_rstd.data(), N, C);
  }
  cpu::embedding_backward(g_.wte, g_.wpe, a.dres.data(), a.inputs.data(), B, T, C);
}

}  // namespace cr
