// Sharded tensors as boxes. A rank holds a dense, row-major box of each global tensor (its TP
// shard, or the whole tensor when replicated); a checkpoint stores boxes too (its chunks).
// Loading into any layout is then: for every box this rank needs, copy in the intersection with
// every stored chunk. Pure arithmetic, no I/O, no MPI.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cr {

struct Box {
  std::vector<int64_t> offset;  // start, per dimension, in global coordinates
  std::vector<int64_t> shape;   // extent, per dimension
};

// The tensor a rank holds: its box of the global tensor, stored densely at data.
struct ShardedTensor {
  std::string name;
  std::vector<int64_t> global_shape;
  Box box;
  float* data = nullptr;
  // A dimension whose extent depends on the layout (the vocabulary, padded to 64 x tp): loading
  // zero-fills what the checkpoint lacks and drops what this layout lacks. -1: none.
  int padded_dim = -1;
};

int64_t volume(const std::vector<int64_t>& shape);
// The overlap of a and b (same rank); false when it is empty.
bool intersect(const Box& a, const Box& b, Box* out);
// Copies `region` (inside both boxes) from src, a dense box src_box, into dst, a dense box
// dst_box. Rows along the last dimension move with memcpy.
void copy_region(const float* src, const Box& src_box, float* dst, const Box& dst_box,
                 const Box& region);
// The box of a tensor split into `parts` equal pieces along `dim` (-1: the whole tensor).
Box shard_box(const std::vector<int64_t>& global_shape, int dim, int part, int parts);

// A flat range of a dense row-major tensor as boxes: elements [begin, end) of a tensor of
// `shape` are the union of the returned boxes, in order, each a contiguous run of the range
// starting at its `first` (so a box's dense data is range data at first - begin). At most
// 2 * (rank - 1) + 1 boxes: a partial leading row, whole rows, a partial trailing row, per
// dimension. ZeRO's optimizer parts are flat ranges; checkpoints store boxes.
struct FlatBox {
  Box box;
  int64_t first = 0;
};
std::vector<FlatBox> flat_range_boxes(const std::vector<int64_t>& shape, int64_t begin, int64_t end);

}  // namespace cr
