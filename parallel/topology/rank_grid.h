// RankGrid: where a rank sits in the (data-parallel x tensor-parallel) grid. Pure arithmetic,
// no MPI: the communicators are built from what it says.
//
// Tensor-parallel groups are runs of consecutive ranks, so that with one rank per GPU and ranks
// numbered node by node, TP traffic (several collectives per layer) stays inside a node, while
// data-parallel traffic (one gradient all-reduce per step) crosses nodes.
//
// Example: world 16, tp 4 -> dp 4.
//
//            tp_rank 0   1   2   3
//   dp_rank 0:      r0  r1  r2  r3     <- TP group {0,1,2,3}   (one node of 4 GPUs)
//   dp_rank 1:      r4  r5  r6  r7
//   dp_rank 2:      r8  r9 r10 r11
//   dp_rank 3:     r12 r13 r14 r15
//                   ^
//                   DP group of tp_rank 0: {0,4,8,12}
//
// Rank 6 has tp_rank 2, dp_rank 1; its TP group is {4,5,6,7}, its DP group {2,6,10,14}.
#pragma once

#include <string>
#include <vector>

namespace cr {

class RankGrid {
 public:
  // Throws InputError when world is not a positive multiple of tp.
  RankGrid(int world, int tp, int rank);

  int world() const { return world_; }
  int rank() const { return rank_; }
  int tp() const { return tp_; }
  int dp() const { return world_ / tp_; }
  int tp_rank() const { return rank_ % tp_; }
  int dp_rank() const { return rank_ / tp_; }

  // Global ranks of this rank's groups, in group-rank order.
  std::vector<int> tp_group() const;
  std::vector<int> dp_group() const;

  std::string describe() const;  // "rank 6/16: tp 2/4, dp 1/4"

 private:
  int world_, tp_, rank_;
};

}  // namespace cr
