// RankGrid is pure arithmetic: checked over whole grids, without MPI.
#include <gtest/gtest.h>

#include <set>

#include "core/common/error.h"
#include "parallel/topology/rank_grid.h"

namespace cr {
namespace {

TEST(RankGrid, SixteenRanksTensorFour) {
  // The example of rank_grid.h: rank 6 -> tp 2, dp 1; TP group {4..7}; DP group {2,6,10,14}.
  RankGrid g(16, 4, 6);
  EXPECT_EQ(g.dp(), 4);
  EXPECT_EQ(g.tp_rank(), 2);
  EXPECT_EQ(g.dp_rank(), 1);
  EXPECT_EQ(g.tp_group(), (std::vector<int>{4, 5, 6, 7}));
  EXPECT_EQ(g.dp_group(), (std::vector<int>{2, 6, 10, 14}));
  EXPECT_EQ(g.describe(), "rank 6/16: tp 2/4, dp 1/4");
}

TEST(RankGrid, GroupsPartitionTheWorldAndIntersectOnce) {
  for (int world : {1, 2, 4, 8, 12, 16}) {
    for (int tp = 1; tp <= world; tp++) {
      if (world % tp) continue;
      std::set<std::vector<int>> tp_groups, dp_groups;
      for (int r = 0; r < world; r++) {
        RankGrid g(world, tp, r);
        const auto t = g.tp_group(), d = g.dp_group();
        EXPECT_EQ((int)t.size(), tp);
        EXPECT_EQ((int)d.size(), world / tp);
        EXPECT_EQ(t[g.tp_rank()], r);  // group order = group rank
        EXPECT_EQ(d[g.dp_rank()], r);
        for (int i = 1; i < tp; i++) EXPECT_EQ(t[i], t[i - 1] + 1);  // TP: consecutive ranks
        tp_groups.insert(t);
        dp_groups.insert(d);
      }
      EXPECT_EQ((int)tp_groups.size(), world / tp);
      EXPECT_EQ((int)dp_groups.size(), tp);
      for (const auto& t : tp_groups)
        for (const auto& d : dp_groups) {
          int common = 0;
          for (int x : t) common += std::count(d.begin(), d.end(), x);
          EXPECT_EQ(common, 1);
        }
    }
  }
}

TEST(RankGrid, RejectsTensorNotDividingWorld) {
  try {
    RankGrid(6, 4, 0);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("parallel.tensor = 4"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("6"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace cr
