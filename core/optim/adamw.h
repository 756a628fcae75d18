// AdamW over a flat parameter buffer, with the learning-rate schedule and global-norm clipping
// that go with it. It runs on whatever (shard of a) buffer it is given: weight decay is decided
// per tensor from the ParamLayout, the update itself is one pass per tensor.
#pragma once

#include <cstdint>
#include <vector>

#include "core/backend/backend.h"
#include "core/model/gpt.h"
#include "core/tensor/tensor.h"

namespace cr {

struct AdamWConfig {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

// The moments m and v live on the backend's device, beside the parameters they update.
// ranges: the parts of the flat buffers this optimizer updates, increasing and disjoint (ZeRO-1:
// this data-parallel rank's parts; empty: all of it). m and v hold exactly those parts, back to
// back, so their size is the sum of the ranges' sizes.
class AdamW {
 public:
  AdamW(const ParamLayout& layout, AdamWConfig cfg, Backend& backend = cpu_backend(),
        std::vector<FlatRange> ranges = {});
  // One update at learning rate lr; increments the step count first (bias correction uses t>=1).
  // params and grads are flat buffers laid out by the layout, on the backend's device; only the
  // ranges are read and written.
  void step(float* params, const float* grads, float lr);
  const std::vector<FlatRange>& ranges() const { return ranges_; }
  int steps_taken() const { return t_; }
  void set_steps_taken(int t) { t_ = t; }  // resuming: the bias corrections continue from t
  DeviceBuffer& m() { return m_; }
  DeviceBuffer& v() { return v_; }

 private:
  const ParamLayout& layout_;
  AdamWConfig cfg_;
  Backend& be_;
  std::vector<FlatRange> ranges_;
  DeviceBuffer m_, v_;
  // Per range: one segment per tensor it meets (offsets relative to the range), with its decay.
  std::vector<std::vector<Backend::AdamWSegment>> segs_;
  int t_ = 0;
};

// Linear warmup from lr/warmup to lr over `warmup` steps, then cosine decay to min_lr at
// max_steps. step counts from 0.
float lr_at(int step, int max_steps, int warmup, float lr, float min_lr);

// sum(g^2) over the parts of tensors inside `ranges` ({} = the whole buffer), counting a
// replicated (not TP-sharded) tensor only where count_replicated: the local term of a global
// gradient norm (TP rank 0 counts the replicated tensors; with ZeRO each DP rank its ranges).
double grad_sum_squares(const ParamLayout& layout, const float* grads,
                        const std::vector<FlatRange>& ranges, bool count_replicated, Backend& backend);

// Global L2 norm of a gradient buffer; if it exceeds max_norm (> 0), scales the buffer so the
// norm is max_norm. Returns the norm before clipping.
float clip_grad_norm(float* grads, size_t n, float max_norm, Backend& backend = cpu_backend());
// The same over a tensor-parallel shard: the true global norm counts every sharded tensor's
// shards (summed over the TP group) and every replicated tensor once (from TP rank 0).
float clip_grad_norm(const ParamLayout& layout, float* grads, float max_norm,
                     TensorParallelComm* tp, Backend& backend = cpu_backend());

}  // namespace cr
