// The model's shape. Everything else about a model (parameter layout, activation sizes, FLOPs)
// is derived from these five numbers.
#pragma once

#include <cstdint>

namespace cr {

struct ModelConfig {
  int n_layer = 0;
  int n_head = 0;
  int n_embd = 0;
  int block_size = 0;  // maximum sequence length T (number of learned positions)
  int vocab_size = 0;  // real vocabulary V

  // V rounded up to a multiple of 64: the LM head's sgemm then runs on friendly shapes. The
  // padded rows of wte stay zero and their logits are masked out of the loss.
  int padded_vocab() const { return (vocab_size + 63) / 64 * 64; }
  int head_size() const { return n_embd / n_head; }
  float ln_eps() const { return 1e-5f; }
};

}  // namespace cr
