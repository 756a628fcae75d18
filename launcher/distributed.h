// Rank discovery and the communicators of one training job. Under mpirun or srun the ranks come
// from MPI; a plain `chainrule train` is a one-rank job with no MPI at all.
#pragma once

#include <memory>

#include "launcher/config.h"
#include "parallel/comm/communicator.h"
#include "parallel/topology/rank_grid.h"

namespace cr {

struct ParallelContext {
  RankGrid grid{1, 1, 0};
  std::unique_ptr<Communicator> world, tp, dp;
  bool mpi = false;
  // This rank's index among the ranks on its node (MPI_COMM_TYPE_SHARED): picks its GPU.
  int local_rank = 0, local_size = 1;
  // MPI_THREAD_MULTIPLE granted: a communication thread may issue collectives while the main
  // thread issues others (parallel.overlap needs it). Always true without MPI.
  bool thread_multiple = true;
};

// True when this process was started by an MPI launcher (mpirun, srun --mpi=pmix, ...).
bool launched_under_mpi();
// Initialises MPI when launched under it (else a single rank); sets the process identity.
void init_processes(ParallelContext& ctx);
// Builds the TP and DP groups for cfg.parallel after validate_layout. Collective.
void build_groups(ParallelContext& ctx, const Config& cfg);
// Ends the job from any rank after an error that may not have reached the others.
[[noreturn]] void abort_processes(int code);
void finalize_processes();

}  // namespace cr
