// AdamW over a flat parameter buffer, with the learning-rate schedule and global-norm clipping
// that go with it. It runs on whatever (shard of a) buffer it is given: weight decay is decided
// per tensor from the ParamLayout, the update itself is one pass per tensor.
#pragma once

#include <cstdint>

#include "core/model/gpt.h"
#include "core/tensor/buffer.h"

namespace cr {

struct AdamWConfig {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

class AdamW {
 public:
  AdamW(const ParamLayout& layout, AdamWConfig cfg);
  // One update at learning rate lr; increments the step count first (bias correction uses t>=1).
  void step(float* params, const float* grads, float lr);
  int steps_taken() const { return t_; }
  void set_steps_taken(int t) { t_ = t; }  // resuming: the bias corrections continue from t
  Buffer<float>& m() { return m_; }
  Buffer<float>& v() { return v_; }

 private:
  const ParamLayout& layout_;
  AdamWConfig cfg_;
  Buffer<float> m_, v_;
  int t_ = 0;
};

// Linear warmup from lr/warmup to lr over `warmup` steps, then cosine decay to min_lr at
// max_steps. step counts from 0.
float lr_at(int step, int max_steps, int warmup, float lr, float min_lr);

// Global L2 norm of a gradient buffer; if it exceeds max_norm (> 0), scales the buffer so the
// norm is max_norm. Returns the norm before clipping.
float clip_grad_norm(float* grads, size_t n, float max_norm);
// The same over a tensor-parallel shard: the true global norm counts every sharded tensor's
// shards (summed over the TP group) and every replicated tensor once (from TP rank 0).
float clip_grad_norm(const ParamLayout& layout, float* grads, float max_norm,
                     TensorParallelComm* tp);

}  // namespace cr
