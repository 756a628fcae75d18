#include "core/optim/adamw.h"

#include <cmath>
#include <vector>

#include "core/backend/cpu/ops.h"

namespace cr {

AdamW::AdamW(const ParamLayout& layout, AdamWConfig cfg)
    : layout_(layout), cfg_(cfg), m_(layout.total()), v_(layout.total()) {}

void AdamW::step(float* params, const float* grads, float lr) {
  t_++;
  std::vector<cpu::AdamWSegment> segs;
  for (const auto& t : layout_.tensors())
    segs.push_back({t.offset, t.numel, t.decay ? cfg_.weight_decay : 0.f});
  cpu::adamw_step_segments(params, grads, m_.data(), v_.data(), segs.data(), segs.size(), lr,
                           cfg_.beta1, cfg_.beta2, cfg_.eps, t_);
}

float lr_at(int step, int max_steps, int warmup, float lr, float min_lr) {
  if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
  if (max_steps <= warmup) return lr;
  double progress = (double)(step - warmup) / (double)(max_steps - warmup);
  if (progress > 1.0) progress = 1.0;
  double coeff = 0.5 * (1.0 + std::cos(M_PI * progress));
  return (float)(min_lr + coeff * (lr - min_lr));
}

float clip_grad_norm(float* grads, size_t n, float max_norm) {
  const float norm = (float)std::sqrt(cpu::sum_squares(grads, n));
  if (max_norm > 0.f && norm > max_norm) cpu::scale(grads, n, max_norm / norm);
  return norm;
}

}  // namespace cr

namespace cr {

float clip_grad_norm(const ParamLayout& layout, float* grads, float max_norm,
                     TensorParallelComm* tp) {
  const bool first = !tp || tp->rank() == 0;
  double local = 0.0;
  for (const auto& t : layout.tensors())
    if (t.shard_dim >= 0 || first) local += cpu::sum_squares(grads + t.offset, t.numel);
  float sq = (float)local;
  if (tp && tp->size() > 1) {
    // Sum in fp32 over ranks, but of a double-accumulated local sum: exact to ~1e-7 relative.
    tp->all_reduce_sum(&sq, 1, "grad_norm");
  }
  const float norm = std::sqrt(sq);
  if (max_norm > 0.f && norm > max_norm) {
    size_t total = layout.total();
    cpu::scale(grads, total, max_norm / norm);
  }
  return norm;
}

}  // namespace cr
