#include "core/optim/adamw.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace cr {

namespace {
TensorView flat(const float* p, size_t n, const Backend& be) {
  return TensorView(const_cast<float*>(p), {(int64_t)n}, DType::F32, be.device());
}

size_t total_size(const std::vector<FlatRange>& ranges) {
  size_t n = 0;
  for (const auto& r : ranges) n += r.size();
  return n;
}

// Calls f(tensor, overlap) for every tensor meeting range r, in layout order.
template <typename F>
void for_each_overlap(const ParamLayout& layout, const FlatRange& r, F f) {
  for (const auto& t : layout.tensors()) {
    const size_t b = std::max(r.begin, t.offset), e = std::min(r.end, t.offset + t.numel);
    if (b < e) f(t, FlatRange{b, e});
  }
}

}  // namespace

AdamW::AdamW(const ParamLayout& layout, AdamWConfig cfg, Backend& backend,
             std::vector<FlatRange> ranges)
    : layout_(layout),
      cfg_(cfg),
      be_(backend),
      ranges_(ranges.empty() ? std::vector<FlatRange>{{0, layout.total()}} : std::move(ranges)),
      m_(backend.allocator(), DType::F32, total_size(ranges_)),
      v_(backend.allocator(), DType::F32, total_size(ranges_)) {
  for (size_t i = 0; i < ranges_.size(); i++) {
    const FlatRange& r = ranges_[i];
    CR_CHECK(r.end <= layout.total() && (i == 0 || r.begin >= ranges_[i - 1].end),
             "AdamW ranges must be increasing and inside the {} parameters", layout.total());
    auto& segs = segs_.emplace_back();
    for_each_overlap(layout, r, [&](const ParamTensor& t, FlatRange o) {
      segs.push_back({o.begin - r.begin, o.size(), t.decay ? cfg_.weight_decay : 0.f});
    });
  }
}

void AdamW::step(float* params, const float* grads, float lr) {
  t_++;
  size_t state = 0;  // where range i's moments start in m and v
  for (size_t i = 0; i < ranges_.size(); i++) {
    const FlatRange& r = ranges_[i];
    be_.adamw_step(flat(params + r.begin, r.size(), be_), flat(grads + r.begin, r.size(), be_),
                   m_.view(state, r.size()), v_.view(state, r.size()), segs_[i].data(),
                   segs_[i].size(), lr, cfg_.beta1, cfg_.beta2, cfg_.eps, t_);
    state += r.size();
  }
}

double grad_sum_squares(const ParamLayout& layout, const float* grads,
                        const std::vector<FlatRange>& ranges, bool count_replicated, Backend& be) {
  const std::vector<FlatRange> all{{0, layout.total()}};
  double sum = 0.0;
  for (const FlatRange& r : ranges.empty() ? all : ranges)
    for_each_overlap(layout, r, [&](const ParamTensor& t, FlatRange o) {
      if (t.shard_dim >= 0 || count_replicated) sum += be.sum_squares(flat(grads + o.begin, o.size(), be));
    });
  return sum;
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
  float sq = (float)grad_sum_squares(layout, grads, {}, first, be);
  if (tp && tp->size() > 1) {
    // Sum in fp32 over ranks, but of a double-accumulated local sum: exact to ~1e-7 relative.
    tp->all_reduce_sum(&sq, 1, "grad_norm");
  }
  const float norm = std::sqrt(sq);
  if (max_norm > 0.f && norm > max_norm) be.scale(flat(grads, layout.total(), be), max_norm / norm);
  return norm;
}

}  // namespace cr
