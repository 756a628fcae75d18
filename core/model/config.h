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

  // V rounded up to a multiple of 64 per tensor-parallel rank: the LM head's sgemm then runs on
  // friendly shapes and the vocabulary splits evenly over tp ranks. The padded rows of wte stay
  // zero and their logits are masked out of the loss.
  int padded_vocab(int tp = 1) const { return (vocab_size + 64 * tp - 1) / (64 * tp) * (64 * tp); }
  int head_size() const { return n_embd / n_head; }
  float ln_eps() const { return 1e-5f; }
};

}  // namespace cr
