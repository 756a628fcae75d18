#include "core/optim/adamw.h"

#include <cmath>
#include <vector>

namespace cr {

namespace {
TensorView flat(const float* p, size_t n, const Backend& be) {
  return TensorView(const_cast<float*>(p), {(int64_t)n}, DType::F32, be.device());
}
}  // namespace

AdamW::AdamW(const ParamLayout& layout, AdamWConfig cfg, Backend& backend)
    : layout_(layout),
      cfg_(cfg),
      be_(backend),
      m_(backend.allocator(), DType::F32, layout.total()),
      v_(backend.allocator(), DType::F32, layout.total()) {
  for (const auto& t : layout_.tensors())
    segs_.push_back({t.offset, t.numel, t.decay ? cfg_.weight_decay : 0.f});
}

void AdamW::step(float* params, const float* grads, float lr) {
  t_++;
  const size_t n = layout_.total();
  be_.adamw_step(flat(params, n, be_), flat(grads, n, be_), m_.view(), v_.view(), segs_.data(),
                 segs_.size(), lr, cfg_.beta1, cfg_.beta2, cfg_.eps, t_);
}

float lr_at(int step, int max_steps, int warmup, float lr, float min_lr) {
  if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
  if (max_steps <= warmup) return lr;
  double progress = (double)(step - warmup) / (double)(max_steps - warmup);
  if (progress > 1.0) progress = 1.0;
  double coeff = 0.5 * (1.0 + std::cos(M_PI * progress));
  return (float)(min_lr + coeff * (lr - min_lr));
}

float clip_grad_norm(float* grads, size_t n, float max_norm, Backend& be) {
  const float norm = (float)std::sqrt(be.sum_squares(flat(grads, n, be)));
  if (max_norm > 0.f && norm > max_norm) be.scale(flat(grads, n, be), max_norm / norm);
  return norm;
}

float clip_grad_norm(const ParamLayout& layout, float* grads, float max_norm,
                     TensorParallelComm* tp, Backend& be) {
  const bool first = !tp || tp->rank() == 0;
  double local = 0.0;
  for (const auto& t : layout.tensors())
    if (t.shard_dim >= 0 || first) local += be.sum_squares(flat(grads + t.offset, t.numel, be));
  float sq = (float)local;
  if (tp && tp->size() > 1) {
    // Sum in fp32 over ranks, but of a double-accumulated local sum: exact to ~1e-7 relative.
    tp->all_reduce_sum(&sq, 1, "grad_norm");
  }
  const float norm = std::sqrt(sq);
  if (max_norm > 0.f && norm > max_norm) be.scale(flat(grads, layout.total(), be), max_norm / norm);
  return norm;
}

}  // namespace cr
