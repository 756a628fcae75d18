#include "parallel/checkpoint/sharded_tensor.h"

#include <algorithm>
#include <cstring>

#include "core/common/error.h"

namespace cr {

int64_t volume(const std::vector<int64_t>& shape) {
  int64_t v = 1;
  for (int64_t d : shape) v *= d;
  return v;
}

bool intersect(const Box& a, const Box& b, Box* out) {
  CR_CHECK(a.offset.size() == b.offset.size(), "boxes of rank {} and {}", a.offset.size(),
           b.offset.size());
  Box r;
  for (size_t d = 0; d < a.offset.size(); d++) {
    const int64_t lo = std::max(a.offset[d], b.offset[d]);
    const int64_t hi = std::min(a.offset[d] + a.shape[d], b.offset[d] + b.shape[d]);
    if (hi <= lo) return false;
    r.offset.push_back(lo);
    r.shape.push_back(hi - lo);
  }
  *out = std::move(r);
  return true;
}

namespace {
// Row-major element index of global point p inside a dense box.
int64_t index_in(const Box& box, const std::vector<int64_t>& p) {
  int64_t idx = 0;
  for (size_t d = 0; d < p.size(); d++) idx = idx * box.shape[d] + (p[d] - box.offset[d]);
  return idx;
}
}  // namespace

void copy_region(const float* src, const Box& src_box, float* dst, const Box& dst_box,
                 const Box& region) {
  const size_t nd = region.shape.size();
  if (nd == 0 || volume(region.shape) == 0) return;
  const int64_t row = region.shape[nd - 1];
  std::vector<int64_t> p = region.offset;  // the start of the current row, in global coordinates
  for (;;) {
    std::memcpy(dst + index_in(dst_box, p), src + index_in(src_box, p), (size_t)row * sizeof(float));
    // Next row: an odometer over every dimension but the last.
    int d = (int)nd - 2;
    for (; d >= 0; d--) {
      if (++p[d] < region.offset[d] + region.shape[d]) break;
      p[d] = region.offset[d];
    }
    if (d < 0) return;
  }
}

Box shard_box(const std::vector<int64_t>& global_shape, int dim, int part, int parts) {
  Box b{std::vector<int64_t>(global_shape.size(), 0), global_shape};
  if (dim < 0) return b;
  CR_CHECK(global_shape[dim] % parts == 0, "dim {} of size {} does not split in {}", dim,
           global_shape[dim], parts);
  b.shape[dim] = global_shape[dim] / parts;
  b.offset[dim] = b.shape[dim] * part;
  return b;
}

}  // namespace cr
