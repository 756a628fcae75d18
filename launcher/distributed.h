// Rank discovery and the communicators of one training job. Under mpirun or srun --mpi=pmix the
// ranks come from MPI; with parallel.bootstrap file:DIR from Slurm's or torchrun's environment
// (no MPI at all); a plain `chainrule train` is a one-rank job with no MPI at all.
//
// Which communicator each group uses (chosen at run time, logged by rank 0 at start-up):
//   world   MPI (control traffic: losses, stop flags, checkpoint metadata), or NCCL with file:DIR
//   tp, dp  NCCL on a CUDA run where this build has NCCL and every rank has its own GPU;
//           MPI otherwise (CPU runs, ranks sharing a GPU: device buffers staged through the host)
#pragma once

#include <memory>
#include <string>

#include "launcher/config.h"
#include "parallel/comm/communicator.h"
#include "parallel/comm/startup_guard.h"
#include "parallel/topology/rank_grid.h"

namespace cr {

class Backend;
class NcclApi;
class PeerDirectory;
class StartupGuard;

struct ParallelContext {
  RankGrid grid{1, 1, 0};
  // Declared first, destroyed last: the NCCL parent communicator that tp and dp were split
  // from (MPI bootstrap), and the NCCL library handle every NCCL communicator shares.
  std::shared_ptr<NcclApi> nccl;
  std::unique_ptr<Communicator> nccl_world;
  std::unique_ptr<Communicator> world, tp, dp;
  bool mpi = false;
  // parallel.bootstrap file:DIR: the directory (empty under MPI) and this job's key in it.
  std::string bootstrap_dir, job_key;
  // This rank's index among the ranks on its node (MPI_COMM_TYPE_SHARED, SLURM_LOCALID or
  // LOCAL_RANK): picks its GPU.
  int local_rank = 0, local_size = 1;
  // Bounds MPI's wire-up by parallel.timeout_s (startup_guard.h): armed by init_processes,
  // disarmed by exchange_peers. Null without MPI.
  std::unique_ptr<StartupGuard> startup;
  // MPI_THREAD_MULTIPLE granted: a communication thread may issue collectives while the main
  // thread issues others (parallel.overlap needs it). Always true without MPI.
  bool thread_multiple = true;
};

// True when this process was started by an MPI launcher (mpirun, srun --mpi=pmix, ...).
bool launched_under_mpi();
// Initialises MPI when launched under it (else a single rank); sets the process identity.
void init_processes(ParallelContext& ctx);
// The same, honouring cfg.parallel.bootstrap: with file:DIR, MPI is not used at all: the ranks
// come from Slurm or torchrun and the world is an NCCL communicator bootstrapped through DIR.
void init_processes(ParallelContext& ctx, const Config& cfg);
// Builds the TP and DP groups for cfg.parallel after validate_layout. Collective. `backend` is
// where training computes (select_backend): on a CUDA backend with NCCL and one GPU per rank the
// groups are NCCL communicators ordered with its stream. The overload without it keeps every
// group on MPI (as for a CPU backend) and refuses parallel.bootstrap file:DIR.
void build_groups(ParallelContext& ctx, const Config& cfg, Backend& backend);
void build_groups(ParallelContext& ctx, const Config& cfg);
// Collective over the world (after build_groups): every rank's host and probe address
// (parallel/comm/peer_probe.h). Rank 0 logs the rank map and warns about tensor-parallel groups
// that span hosts. Null for a one-rank job. Ends the start-up guard (ctx.startup).
std::shared_ptr<PeerDirectory> exchange_peers(ParallelContext& ctx);
// Destroys the communicators, split groups before the ones they were split from (NCCL).
void release_groups(ParallelContext& ctx);
// Ends the job from any rank after an error that may not have reached the others.
[[noreturn]] void abort_processes(int code);
void finalize_processes();

// The choice build_groups makes for the TP and DP groups, from facts alone (unit-tested).
// Throws InputError where parallel.bootstrap file:DIR cannot work (no NCCL in this build, a CPU
// backend, ranks sharing a GPU).
struct GroupCommChoice {
  bool nccl = false;
  std::string reason;  // why not NCCL, for the start-up log ("" when NCCL)
};
GroupCommChoice choose_group_communicator(bool file_bootstrap, bool build_has_nccl,
                                          bool backend_cuda, int local_size, int gpus);

}  // namespace cr
