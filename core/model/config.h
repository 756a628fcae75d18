// The model's shape and family. Everything else about a model (parameter table, activation
// sizes, FLOPs) is derived from these fields.
//
// Two families of decoder-only transformer share one implementation (core/model/gpt.cpp):
//   gpt2   learned positions, LayerNorm, GELU (tanh) MLP of ffn_hidden = 4C, biases, LM head
//          tied to the token embedding (Radford et al. 2019; Hugging Face GPT2LMHeadModel).
//   llama  rotary positions (RoPE, Su et al. 2021, Hugging Face's rotate-half convention),
//          RMSNorm, SwiGLU MLP (Shazeer 2020), grouped-query attention (Ainslie et al. 2023),
//          no biases and an untied LM head by default (Touvron et al. 2023; LlamaForCausalLM).
#pragma once

#include <cstdint>
#include <string>

namespace cr {

enum class ModelFamily : uint8_t { GPT2 = 0, Llama = 1 };

inline const char* family_name(ModelFamily f) { return f == ModelFamily::Llama ? "llama" : "gpt2"; }

struct ModelConfig {
  int n_layer = 0;
  int n_head = 0;
  int n_embd = 0;
  int block_size = 0;  // maximum sequence length T (gpt2: the number of learned positions)
  int vocab_size = 0;  // real vocabulary V
  ModelFamily family = ModelFamily::GPT2;
  int n_kv_head = 0;      // key/value heads (grouped-query attention); 0: n_head
  int ffn_hidden = 0;     // MLP hidden width; 0: the family's default (ffn_hidden_size())
  float rope_theta = 10000.f;  // llama: RoPE base
  float norm_eps = 1e-5f;      // LayerNorm / RMSNorm epsilon
  bool tie_embeddings = true;  // LM head shares the token embedding (gpt2 default; llama: false)
  bool bias = true;            // gpt2: biases everywhere; llama: q/k/v/o biases (attention_bias)

  // V rounded up to a multiple of 64 per tensor-parallel rank: the LM head's sgemm then runs on
  // friendly shapes and the vocabulary splits evenly over tp ranks. The padded rows of the
  // embedding (and LM head) stay zero and their logits are masked out of the loss.
  int padded_vocab(int tp = 1) const { return (vocab_size + 64 * tp - 1) / (64 * tp) * (64 * tp); }
  int head_size() const { return n_embd / n_head; }
  int kv_heads() const { return n_kv_head > 0 ? n_kv_head : n_head; }
  bool llama() const { return family == ModelFamily::Llama; }
  // gpt2: 4C. llama: 8C/3 (the parameter count of a 4C GELU MLP) rounded up to a multiple of 256,
  // Meta's `multiple_of`.
  int ffn_hidden_size() const {
    if (ffn_hidden > 0) return ffn_hidden;
    if (!llama()) return 4 * n_embd;
    return (8 * n_embd / 3 + 255) / 256 * 256;
  }
};

}  // namespace cr
