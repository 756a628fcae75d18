// Writes a tiny model, one batch's gradients and a 10-step AdamW trajectory for
// gpt2_torch_reference.py / llama_torch_reference.py to replay in PyTorch (float64).
// Usage: reference_dump OUTDIR [gpt2 | llama | llama-tied-bias] [masked]
//
// The Llama variants use grouped-query attention (4 query heads sharing 2 kv heads), RoPE,
// RMSNorm and SwiGLU; "llama" has an untied head and no biases (the family's defaults),
// "llama-tied-bias" a tied head, q/k/v/o biases and rope_theta 500000.
//
// The model is small but reaches every path: 2 layers, 4 heads, a vocabulary of 65 padded to
// 128 (masking), gradient accumulation over 2 micro-batches, warmup + cosine schedule, and a
// clip threshold the gradient norm crosses. Weights are perturbed away from the GPT-2 init
// (LayerNorm gains and biases non-trivial) so no gradient is degenerate.
//
// "masked": the batches are packed prompt->completion documents (EOT = V-1 first, a prompt, a
// completion) with a loss mask, trained with a document mask and prefix-LM: the targets of
// prompt tokens are not counted (-1), the attention key ranges come from build_kv_range, and a
// step weighs each micro-batch by its counted targets. reference.json then holds the raw
// windows (tokens and loss mask, T+1 each) for the oracle to build its own boolean masks.
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/common/rng.h"
#include "core/data/attention_mask.h"
#include "core/model/gpt.h"
#include "core/model/hf_interchange.h"
#include "core/optim/adamw.h"

using namespace cr;

namespace {

nlohmann::json rows(const std::vector<int32_t>& v, int B, int T) {
  nlohmann::json out = nlohmann::json::array();
  for (int b = 0; b < B; b++)
    out.push_back(std::vector<int32_t>(v.begin() + (size_t)b * T, v.begin() + (size_t)(b + 1) * T));
  return out;
}

void random_tokens(Rng& rng, int V, std::vector<int32_t>& in, std::vector<int32_t>& tgt) {
  for (auto& t : in) t = (int32_t)rng.below(V);
  for (auto& t : tgt) t = (int32_t)rng.below(V);
}

// A masked batch: B windows of T+1 packed documents [EOT, prompt..., completion...] with their
// loss mask (1 = a completion token), and what the model gets from them.
struct MaskedBatch {
  std::vector<int32_t> window;  // [B, T+1]
  std::vector<uint8_t> mask;    // [B, T+1]
  std::vector<int32_t> in, tgt, range;
};
MaskedBatch masked_batch(Rng& rng, int V, int B, int T) {
  const int32_t eot = V - 1;
  MaskedBatch m;
  for (int b = 0; b < B; b++) {
    bool prompt = rng.below(2) == 0;
    for (int t = 0; t <= T; t++) {
      int32_t tok = (int32_t)rng.below(V - 1);
      if (rng.below(7) == 0) tok = eot, prompt = true;  // a new document
      else if (prompt && rng.below(4) == 0) prompt = false;
      m.window.push_back(tok);
      m.mask.push_back(tok != eot && !prompt ? 1 : 0);
    }
  }
  m.in.resize((size_t)B * T), m.tgt.resize((size_t)B * T), m.range.resize(2 * (size_t)B * T);
  std::vector<uint8_t> prefix(T);
  for (int b = 0; b < B; b++) {
    const int32_t* w = m.window.data() + (size_t)b * (T + 1);
    const uint8_t* k = m.mask.data() + (size_t)b * (T + 1);
    for (int t = 0; t < T; t++) {
      m.in[(size_t)b * T + t] = w[t];
      m.tgt[(size_t)b * T + t] = k[t + 1] ? w[t + 1] : -1;
      prefix[t] = k[t] ? 0 : 1;
    }
    build_kv_range(m.in.data() + (size_t)b * T, prefix.data(), T, AttentionMaskSpec{true, true, eot},
                   m.range.data() + 2 * (size_t)b * T);
  }
  return m;
}

nlohmann::json masked_json(const MaskedBatch& m, int B, int T) {
  nlohmann::json j = {{"windows", rows(m.window, B, T + 1)}, {"loss_mask", nlohmann::json::array()}};
  for (int b = 0; b < B; b++)
    j["loss_mask"].push_back(std::vector<int>(m.mask.begin() + (size_t)b * (T + 1),
                                              m.mask.begin() + (size_t)(b + 1) * (T + 1)));
  return j;
}

double counted(const std::vector<int32_t>& tgt) {
  return (double)std::count_if(tgt.begin(), tgt.end(), [](int32_t t) { return t >= 0; });
}

}  // namespace

int main(int argc, char** argv) {
  const std::string variant = argc >= 3 ? argv[2] : "gpt2";
  const bool masked = argc == 4 && std::string(argv[3]) == "masked";
  if (argc < 2 || argc > 4 || (argc == 4 && !masked) ||
      (variant != "gpt2" && variant != "llama" && variant != "llama-tied-bias")) {
    fprintf(stderr, "usage: reference_dump OUTDIR [gpt2 | llama | llama-tied-bias] [masked]\n");
    return 2;
  }
  const std::string out = argv[1];
  std::filesystem::create_directories(out);
  ModelConfig mc{/*n_layer=*/2, /*n_head=*/4, /*n_embd=*/32, /*block_size=*/16, /*vocab_size=*/65};
  if (variant != "gpt2") {
    mc.family = ModelFamily::Llama;
    mc.n_kv_head = 2;
    mc.ffn_hidden = 48;
    mc.tie_embeddings = variant == "llama-tied-bias";
    mc.bias = variant == "llama-tied-bias";
    if (mc.bias) mc.rope_theta = 500000.f;
  }
  const int B = 2, T = 16, V = mc.vocab_size;

  GPT model(mc);
  model.init(7);
  Rng rng(11);
  for (const auto& t : model.layout().tensors()) {
    const size_t n = t.padded_dim == 0 ? (size_t)V * mc.n_embd : t.numel;  // padding stays zero
    for (size_t i = 0; i < n; i++) model.params()[t.offset + i] += (float)(0.05 * rng.normal());
  }
  save_hf_safetensors(mc, model.params(), out + "/model.safetensors");
  std::ofstream(out + "/config.json") << hf_config_json(mc).dump(2);
  std::vector<float> initial(model.params(), model.params() + model.num_params());

  // ---- one batch: loss and every gradient ----
  std::vector<int32_t> in(B * T), tgt(B * T);
  MaskedBatch mb;
  if (masked)
    mb = masked_batch(rng, V, B, T), in = mb.in, tgt = mb.tgt;
  else
    random_tokens(rng, V, in, tgt);
  model.zero_grad();
  const float loss = model.forward(in.data(), tgt.data(), B, T, masked ? mb.range.data() : nullptr);
  model.backward(1.f);
  save_hf_safetensors(mc, model.grads(), out + "/grads.safetensors");
  nlohmann::json ref;
  ref["grad_check"] = {{"inputs", rows(in, B, T)}, {"targets", rows(tgt, B, T)}, {"loss", loss}};
  if (masked) {
    ref["masked"] = {{"eot", V - 1}, {"document_mask", true}, {"prefix_lm", true}};
    ref["grad_check"]["masked"] = masked_json(mb, B, T);
  }

  // ---- 10 AdamW steps with accumulation, schedule and clipping ----
  std::copy(initial.begin(), initial.end(), model.params());
  const AdamWConfig ac{0.9f, 0.95f, 1e-8f, 0.1f};
  const float grad_clip = 1.0f;
  AdamW opt(model.layout(), ac);
  const int steps = 10, accum = 2;
  nlohmann::json jsteps = nlohmann::json::array();
  for (int s = 0; s < steps; s++) {
    model.zero_grad();
    nlohmann::json micro = nlohmann::json::array();
    double step_loss = 0;
    if (masked) {  // each micro-batch weighs its counted targets over the step's (train_loop.cpp)
      MaskedBatch m[accum];
      double total = 0;
      for (int k = 0; k < accum; k++) m[k] = masked_batch(rng, V, B, T), total += counted(m[k].tgt);
      for (int k = 0; k < accum; k++) {
        const double w = counted(m[k].tgt) / total;
        step_loss += model.forward(m[k].in.data(), m[k].tgt.data(), B, T, m[k].range.data()) * w;
        model.backward((float)w);
        nlohmann::json j = {{"inputs", rows(m[k].in, B, T)}, {"targets", rows(m[k].tgt, B, T)},
                            {"weight", w}};
        j["masked"] = masked_json(m[k], B, T);
        micro.push_back(j);
      }
      step_loss *= accum;  // the step's loss below is step_loss / accum
    }
    for (int k = 0; k < accum && !masked; k++) {
      random_tokens(rng, V, in, tgt);
      step_loss += model.forward(in.data(), tgt.data(), B, T);
      model.backward(1.f / accum);
      micro.push_back({{"inputs", rows(in, B, T)}, {"targets", rows(tgt, B, T)}});
    }
    const float norm = clip_grad_norm(model.grads(), model.num_params(), grad_clip);
    const float lr = lr_at(s, steps, 3, 1e-2f, 1e-3f);
    opt.step(model.params(), model.grads(), lr);
    jsteps.push_back({{"lr", lr}, {"micro_batches", micro}, {"loss", step_loss / accum}, {"grad_norm", norm}});
  }
  ref["decay"] = nlohmann::json::array();
  for (const auto& t : model.layout().tensors())
    if (t.decay) ref["decay"].push_back(t.hf_name);
  ref["train"] = {{"beta1", ac.beta1}, {"beta2", ac.beta2}, {"eps", ac.eps},
                  {"weight_decay", ac.weight_decay}, {"grad_clip", grad_clip}, {"steps", jsteps}};
  std::ofstream(out + "/reference.json") << ref.dump();
  return 0;
}
