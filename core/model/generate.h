// Autoregressive generation with a KV cache: each new token costs one row through every layer,
// attending to the cached keys and values of all earlier positions.
#pragma once

#include <cstdint>

#include "core/common/rng.h"
#include "core/model/gpt.h"

namespace cr {

class Generator {
 public:
  explicit Generator(const GPT& model);
  // Feeds the token at the next position and returns its logits (first vocab_size entries are
  // real). Throws once the context (block_size) is full.
  const float* step(int32_t token);
  int position() const { return pos_; }
  void reset() { pos_ = 0; }

 private:
  const GPT& model_;
  Weights w_;
  int pos_ = 0;
  Buffer<float> kcache_, vcache_;  // [n_layer, block_size, C]
  Buffer<float> x_, ln_, qkv_, atty_, proj_, fch_, fch_gelu_, logits_, mean_, rstd_;
};

// Samples a token from logits[0:V] at `temperature` (0 = greedy), restricted to the top_k most
// likely tokens when top_k > 0.
int32_t sample_token(const float* logits, int V, float temperature, int top_k, Rng& rng);

}  // namespace cr
