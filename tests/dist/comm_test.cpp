// The MPI communicator against closed-form results (nccl-tests style: inputs are a function of
// rank and index, so every output element is predictable). Run under mpirun with any N.
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <algorithm>
#include <vector>

#include "parallel/comm/mpi_communicator.h"
#include "parallel/topology/rank_grid.h"

using namespace cr;

static int failures = 0;
#define EXPECT(cond, ...)                                                       \
  do {                                                                          \
    if (!(cond)) {                                                              \
      failures++;                                                               \
      std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);      \
    }                                                                           \
  } while (0)

static float value(int rank, size_t i) { return (float)(rank + 1) * 0.5f + (float)(i % 7); }

static void check_group(Communicator& c) {
  const int n = c.size(), r = c.rank();
  const size_t len = 1000;
  std::vector<float> a(len);
  for (size_t i = 0; i < len; i++) a[i] = value(r, i);
  c.all_reduce(a.data(), len, ReduceOp::Sum);  // sum_r ((r+1)/2 + i%7) = n(n+1)/4 + n(i%7)
  for (size_t i = 0; i < len; i++) EXPECT(a[i] == n * (n + 1) / 4.f + n * (float)(i % 7));
  for (size_t i = 0; i < len; i++) a[i] = value(r, i);
  c.all_reduce(a.data(), len, ReduceOp::Max);
  for (size_t i = 0; i < len; i++) EXPECT(a[i] == value(n - 1, i));

  std::vector<float> send(len * n), recv(len);
  for (size_t i = 0; i < send.size(); i++) send[i] = value(r, i);
  c.reduce_scatter(send.data(), recv.data(), len, ReduceOp::Sum);
  for (size_t i = 0; i < len; i++) {
    const size_t gi = r * len + i;
    EXPECT(recv[i] == n * (n + 1) / 4.f + n * (float)(gi % 7));
  }
  // In place: the result lands in this rank's part of the send buffer.
  for (size_t i = 0; i < send.size(); i++) send[i] = value(r, i);
  c.reduce_scatter(send.data(), send.data() + r * len, len, ReduceOp::Sum);
  for (size_t i = 0; i < len; i++) {
    const size_t gi = r * len + i;
    EXPECT(send[r * len + i] == n * (n + 1) / 4.f + n * (float)(gi % 7));
  }
  std::vector<float> mine(len), all(len * n);
  for (size_t i = 0; i < len; i++) mine[i] = value(r, i);
  c.all_gather(mine.data(), all.data(), len);
  for (int q = 0; q < n; q++)
    for (size_t i = 0; i < len; i++) EXPECT(all[q * len + i] == value(q, i));
  std::fill(all.begin(), all.end(), -7.f);  // in place: this rank's part already in recv
  for (size_t i = 0; i < len; i++) all[r * len + i] = value(r, i);
  c.all_gather(all.data() + r * len, all.data(), len);
  for (int q = 0; q < n; q++)
    for (size_t i = 0; i < len; i++) EXPECT(all[q * len + i] == value(q, i));
  std::vector<float> b(len, r == n - 1 ? 42.f : -1.f);
  c.broadcast(b.data(), len, n - 1);
  for (float x : b) EXPECT(x == 42.f);
  c.barrier();
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  {
    auto world = MpiCommunicator::world();
    world->set_timeout(std::chrono::seconds(30));
    check_group(*world);
    const int tp = world->size() % 2 == 0 ? 2 : 1;
    RankGrid grid(world->size(), tp, world->rank());
    auto tpc = world->split(grid.dp_rank(), "tp");
    auto dpc = world->split(grid.tp_rank(), "dp");
    EXPECT(tpc->size() == grid.tp() && tpc->rank() == grid.tp_rank());
    EXPECT(dpc->size() == grid.dp() && dpc->rank() == grid.dp_rank());
    check_group(*tpc);
    check_group(*dpc);
    // The group's name lists its world ranks: what a timeout report shows.
    std::string want = "tp[";
    for (int x : grid.tp_group()) want += std::to_string(x) + ",";
    want.back() = ']';
    EXPECT(tpc->name() == want);
    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (world->rank() == 0) std::printf("comm_test on %d ranks: %d failures\n", world->size(), total);
    failures = total;
  }
  MPI_Finalize();
  return failures ? 1 : 0;
}
