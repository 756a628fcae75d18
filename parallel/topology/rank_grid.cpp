#include "parallel/topology/rank_grid.h"

#include <fmt/format.h>

#include "core/common/error.h"

namespace cr {

RankGrid::RankGrid(int world, int tp, int rank) : world_(world), tp_(tp), rank_(rank) {
  if (world < 1) CR_INPUT_ERROR("world size {} must be >= 1", world);
  if (tp < 1 || world % tp != 0)
    CR_INPUT_ERROR("parallel.tensor = {} does not divide the world size {} (ranks)", tp, world);
  CR_CHECK(rank >= 0 && rank < world, "rank {} outside world {}", rank, world);
}

std::vector<int> RankGrid::tp_group() const {
  std::vector<int> g;
  for (int i = 0; i < tp_; i++) g.push_back(dp_rank() * tp_ + i);
  return g;
}

std::vector<int> RankGrid::dp_group() const {
  std::vector<int> g;
  for (int i = 0; i < dp(); i++) g.push_back(i * tp_ + tp_rank());
  return g;
}

std::string RankGrid::describe() const {
  return fmt::format("rank {}/{}: tp {}/{}, dp {}/{}", rank_, world_, tp_rank(), tp_, dp_rank(),
                     dp());
}

}  // namespace cr
