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

namespace {
// Boxes of elements [begin, end) of the sub-tensor shape[d:], which sits at `prefix` (the
// indices of dimensions < d, extent 1) and starts at flat element `base` of the whole tensor.
void flat_boxes(const std::vector<int64_t>& shape, size_t d, std::vector<int64_t> prefix,
                int64_t base, int64_t begin, int64_t end, std::vector<FlatBox>& out) {
  if (begin >= end) return;
  const int64_t inner = volume({shape.begin() + (long)d + 1, shape.end()});
  auto emit = [&](int64_t row0, int64_t rows) {  // whole rows [row0, row0 + rows) of dim d
    Box b{prefix, std::vector<int64_t>(prefix.size(), 1)};
    b.offset.push_back(row0);
    b.shape.push_back(rows);
    for (size_t k = d + 1; k < shape.size(); k++) {
      b.offset.push_back(0);
      b.shape.push_back(shape[k]);
    }
    out.push_back({std::move(b), base + row0 * inner});
  };
  if (d + 1 == shape.size()) return emit(begin, end - begin);  // the last dim: one run
  int64_t r0 = begin / inner, r1 = end / inner;               // rows [r0, r1) may be whole
  auto partial = [&](int64_t row, int64_t from, int64_t to) {
    auto p = prefix;
    p.push_back(row);
    flat_boxes(shape, d + 1, std::move(p), base + row * inner, from, to, out);
  };
  if (r0 == r1) return partial(r0, begin % inner, end % inner);  // inside one row
  if (begin % inner != 0) partial(r0++, begin % inner, inner);
  if (r1 > r0) emit(r0, r1 - r0);
  if (end % inner != 0) partial(r1, 0, end % inner);
}
}  // namespace

std::vector<FlatBox> flat_range_boxes(const std::vector<int64_t>& shape, int64_t begin, int64_t end) {
  CR_CHECK(!shape.empty() && 0 <= begin && begin <= end && end <= volume(shape),
           "flat range [{}, {}) of a tensor of {} elements", begin, end, volume(shape));
  std::vector<FlatBox> out;
  flat_boxes(shape, 0, {}, 0, begin, end, out);
  return out;
}

}  // namespace cr
