#include "launcher/distributed.h"

#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>

#include "core/common/log.h"
#include "parallel/comm/mpi_communicator.h"

namespace cr {

namespace {
const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "-";
}
}  // namespace

bool launched_under_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(v)) return true;
  return false;
}

void init_processes(ParallelContext& ctx) {
  if (!launched_under_mpi()) {
    ctx.world = make_single_rank_communicator();
    return;
  }
  // MULTIPLE: with parallel.overlap the gradient buckets are reduced on a communication thread
  // while the main thread runs backward and its tensor-parallel collectives.
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
  ctx.thread_multiple = provided >= MPI_THREAD_MULTIPLE;
  ctx.mpi = true;
  ctx.world = MpiCommunicator::world();
  auto& id = process_identity();
  id.rank = ctx.world->rank();
  id.world = ctx.world->size();
  MPI_Comm node;  // the ranks sharing this node's memory: local rank for GPU selection
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &ctx.local_rank);
  MPI_Comm_size(node, &ctx.local_size);
  MPI_Comm_free(&node);
  log::info("launched as {} ranks under MPI ({}); rank 0 on {}: OMPI_COMM_WORLD_RANK={} "
            "OMPI_COMM_WORLD_LOCAL_RANK={} SLURM_JOB_ID={} SLURM_PROCID={} SLURM_LOCALID={} "
            "SLURM_NTASKS={}",
            id.world, mpi_library_version(), id.host, env("OMPI_COMM_WORLD_RANK"),
            env("OMPI_COMM_WORLD_LOCAL_RANK"), env("SLURM_JOB_ID"), env("SLURM_PROCID"),
            env("SLURM_LOCALID"), env("SLURM_NTASKS"));
}

void build_groups(ParallelContext& ctx, const Config& cfg) {
  const auto timeout = std::chrono::milliseconds((long)(cfg.parallel.timeout_s * 1000.0));
  ctx.world->set_timeout(timeout);
  ctx.grid = RankGrid(ctx.world->size(), cfg.parallel.tensor, ctx.world->rank());
  if (!ctx.mpi) {
    ctx.tp = make_single_rank_communicator();
    ctx.dp = make_single_rank_communicator();
    return;
  }
  auto& world = static_cast<MpiCommunicator&>(*ctx.world);
  // TP groups: ranks sharing a dp_rank; DP groups: ranks sharing a tp_rank (see rank_grid.h).
  ctx.tp = world.split(ctx.grid.dp_rank(), "tp");
  ctx.dp = world.split(ctx.grid.tp_rank(), "dp");
  ctx.tp->set_timeout(timeout);
  ctx.dp->set_timeout(timeout);
}

void abort_processes(int code) {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

void finalize_processes() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Finalize();
}

}  // namespace cr
