// Autoregressive generation with a KV cache: each new token costs one row through every layer,
// attending to the cached keys and values of all earlier positions.
#pragma once

#include <cstdint>

#include "core/common/rng.h"
#include "core/model/gpt.h"

namespace cr {

class Generator {
 public:
  // Runs on the model's own blocks (GPT::decode) with a KV cache of its own.
  explicit Generator(GPT& model) : model_(model), cache_(model.make_cache()) {}
  // Feeds the token at the next position and returns its logits (first vocab_size entries are
  // real). Throws once the context (block_size) is full.
  const float* step(int32_t token) { return model_.decode(&token, 1, cache_); }
  // Feeds a whole prompt at once (the first call only) and returns its last position's logits.
  // prefix_lm: the prompt is read bidirectionally, as a prefix-LM trained on it (T5, UniLM);
  // the tokens generated after it are causal.
  const float* prefill(const int32_t* tokens, int n, bool prefix_lm) {
    return model_.decode(tokens, n, cache_, prefix_lm);
  }
  int position() const { return cache_.len; }
  void reset() { cache_.len = 0; }

 private:
  GPT& model_;
  KVCache cache_;
};

// Samples a token from logits[0:V] at `temperature` (0 = greedy), restricted to the top_k most
// likely tokens when top_k > 0.
int32_t sample_token(const float* logits, int V, float temperature, int top_k, Rng& rng);

}  // namespace cr
