// Rank discovery and the job's communicators (see distributed.h): MPI start-up, the file
// bootstrap of NCCL, and the choice of communicator per group.
#include "launcher/distributed.h"

#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <numeric>

#include "core/backend/backend.h"
#include "core/common/log.h"
#include "parallel/comm/mpi_communicator.h"
#include "parallel/comm/nccl_bootstrap.h"
#include "parallel/comm/nccl_communicator.h"
#include "parallel/comm/peer_probe.h"

namespace cr {

namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "-";
}

std::chrono::milliseconds timeout_of(const Config& cfg) {
  return std::chrono::milliseconds((long)(cfg.parallel.timeout_s * 1000.0));
}

// "DIR" of parallel.bootstrap file:DIR, "" for mpi (config.cpp validated the form).
std::string bootstrap_dir(const Config& cfg) {
  const std::string& b = cfg.parallel.bootstrap;
  return b.rfind("file:", 0) == 0 ? b.substr(5) : "";
}

// train.device as select_backend resolves it: empty means cuda where this binary sees a GPU.
bool wants_cuda(const Config& cfg) {
  return cfg.train.device == "cuda" || (cfg.train.device.empty() && cuda_available());
}

std::vector<int> all_ranks(int n) {
  std::vector<int> r((size_t)n);
  std::iota(r.begin(), r.end(), 0);
  return r;
}

// Every rank of the world must agree before a collective NCCL init (nodes may differ in GPUs).
bool all_agree(Communicator& world, bool mine) {
  for (const auto& v : world.all_gather_bytes(mine ? "1" : "0", "nccl selection"))
    if (v != "1") return false;
  return true;
}

// One line on rank 0: which communicator each group uses, and why.
void log_groups(const ParallelContext& ctx, const std::string& world_kind,
                const std::string& group_kind) {
  log::info("communicators: world {} ({} ranks); tp {} ({} ranks), dp {} ({} ranks)", world_kind,
            ctx.world->size(), group_kind, ctx.tp->size(), group_kind, ctx.dp->size());
}

}  // namespace

bool launched_under_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(v)) return true;
  return false;
}

GroupCommChoice choose_group_communicator(bool file_bootstrap, bool build_has_nccl,
                                          bool backend_cuda, int local_size, int gpus) {
  const bool shared = local_size > gpus;
  if (file_bootstrap) {
    if (!build_has_nccl || !backend_cuda)
      CR_INPUT_ERROR("parallel.bootstrap file:DIR needs the NCCL communicator (a CUDA build and "
                     "train.device cuda)");
    if (shared)
      CR_INPUT_ERROR("parallel.bootstrap file:DIR: {} rank(s) on this node but {} GPU(s): NCCL needs "
                     "one GPU per rank", local_size, gpus);
    return {true, ""};
  }
  if (!backend_cuda) return {false, "CPU backend"};
  if (!build_has_nccl) return {false, "this build has no NCCL"};
  if (shared)
    return {false, fmt::format("{} ranks share {} GPU(s) on a node; NCCL needs one GPU per rank",
                               local_size, gpus)};
  return {true, ""};
}

// ---- start-up ------------------------------------------------------------------------------------

void init_processes(ParallelContext& ctx) {
  if (!launched_under_mpi()) {
    ctx.world = make_single_rank_communicator();
    return;
  }
  // MULTIPLE: with parallel.overlap the gradient buckets are reduced on a communication thread
  // while the main thread runs backward and its tensor-parallel collectives.
  int provided = 0;
  if (ctx.startup) ctx.startup->stage("MPI_Init");
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
  ctx.thread_multiple = provided >= MPI_THREAD_MULTIPLE;
  ctx.mpi = true;
  if (ctx.startup) ctx.startup->stage("connecting the ranks (the world communicator's first all-gather)");
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

// parallel.bootstrap file:DIR: ranks from the environment, the NCCL id through DIR, the world an
// NCCL communicator. Rank 0's id file goes once every rank has joined (init completes only then).
void init_processes(ParallelContext& ctx, const Config& cfg) {
  const std::string dir = bootstrap_dir(cfg);
  if (dir.empty()) {
    if (launched_under_mpi())
      ctx.startup = std::make_unique<StartupGuard>(timeout_of(cfg), "MPI_Init");
    return init_processes(ctx);
  }
  auto api = make_nccl_api();
  const int gpus = api ? api->device_count() : 0;
  // The build and the device first: without NCCL, that is the error to fix, not the ranks.
  choose_group_communicator(true, api != nullptr, wants_cuda(cfg), 1, 1);
  const EnvRanks r = ranks_from_environment();
  choose_group_communicator(true, true, true, r.local_size, gpus);
  auto& id = process_identity();
  id.rank = r.rank;
  id.world = r.world;
  ctx.local_rank = r.local_rank;
  ctx.local_size = r.local_size;
  ctx.bootstrap_dir = dir;
  ctx.job_key = r.job_key;
  api->set_device(r.local_rank % gpus);  // the GPU select_backend picks too
  std::unique_ptr<NcclIdFile> published;
  NcclId nid;
  if (r.rank == 0) {
    nid = api->unique_id();
    published = std::make_unique<NcclIdFile>(dir, r.job_key, nid);
  } else {
    nid = wait_for_nccl_id(dir, r.job_key, timeout_of(cfg), r.rank);
  }
  ctx.world = NcclCommunicator::init(api, nid, r.rank, r.world, group_name("world", all_ranks(r.world)),
                                     timeout_of(cfg));
  if (published) published->remove();
  ctx.nccl = std::move(api);
  log::info("launched as {} ranks from {} ({}), NCCL bootstrap through {}; {}", r.world, r.source,
            r.job_key, nccl_id_path(dir, r.job_key), ctx.nccl->version());
}

// ---- groups --------------------------------------------------------------------------------------

namespace {

// TP and DP as NCCL communicators split from `parent`; all three follow the compute stream.
void split_nccl_groups(ParallelContext& ctx, NcclCommunicator& parent, NcclApi::Stream compute) {
  const RankGrid& g = ctx.grid;
  parent.set_compute_stream(compute);
  const NcclSplit t = tp_split(g), d = dp_split(g);
  auto tp = parent.split(t.color, t.key, g.tp_rank(), g.tp(), group_name("tp", g.tp_group()));
  auto dp = parent.split(d.color, d.key, g.dp_rank(), g.dp(), group_name("dp", g.dp_group()));
  ctx.tp = std::move(tp);
  ctx.dp = std::move(dp);
}

void build_mpi_groups(ParallelContext& ctx) {
  auto& world = static_cast<MpiCommunicator&>(*ctx.world);
  if (ctx.startup) ctx.startup->stage("splitting the tp and dp groups");
  // TP groups: ranks sharing a dp_rank; DP groups: ranks sharing a tp_rank (see rank_grid.h).
  ctx.tp = world.split(ctx.grid.dp_rank(), "tp");
  ctx.dp = world.split(ctx.grid.tp_rank(), "dp");
}

// MPI bootstrap of NCCL: one NCCL world (its id drawn by rank 0 and sent over the MPI world),
// split into TP and DP. The MPI world stays for control traffic.
void build_nccl_groups_over_mpi(ParallelContext& ctx, std::shared_ptr<NcclApi> api,
                                NcclApi::Stream compute, std::chrono::milliseconds timeout) {
  const int gpus = api->device_count();
  api->set_device(ctx.local_rank % gpus);
  const NcclId id = exchange_nccl_id(*ctx.world, *api);
  auto parent = NcclCommunicator::init(api, id, ctx.world->rank(), ctx.world->size(),
                                       group_name("nccl-world", all_ranks(ctx.world->size())),
                                       timeout);
  split_nccl_groups(ctx, *parent, compute);
  ctx.nccl_world = std::move(parent);
  ctx.nccl = std::move(api);
}

}  // namespace

void build_groups(ParallelContext& ctx, const Config& cfg) {
  ctx.world->set_timeout(timeout_of(cfg));
  ctx.grid = RankGrid(ctx.world->size(), cfg.parallel.tensor, ctx.world->rank());
  // NCCL groups must follow the training backend's stream (the legacy default stream would not
  // order them after its kernels): file:DIR goes through the overload that knows the backend.
  CR_CHECK(ctx.bootstrap_dir.empty(), "parallel.bootstrap {}: build_groups needs the training backend",
           cfg.parallel.bootstrap);
  if (!ctx.mpi) {
    ctx.tp = make_single_rank_communicator();
    ctx.dp = make_single_rank_communicator();
    return;
  }
  build_mpi_groups(ctx);
  ctx.tp->set_timeout(timeout_of(cfg));
  ctx.dp->set_timeout(timeout_of(cfg));
}

void build_groups(ParallelContext& ctx, const Config& cfg, Backend& backend) {
  const auto timeout = timeout_of(cfg);
  ctx.world->set_timeout(timeout);
  ctx.grid = RankGrid(ctx.world->size(), cfg.parallel.tensor, ctx.world->rank());
  if (!ctx.bootstrap_dir.empty()) {  // the world is NCCL already (init_processes)
    split_nccl_groups(ctx, static_cast<NcclCommunicator&>(*ctx.world),
                      ctx.nccl->compute_stream_of(backend));
    const std::string nccl = "NCCL " + ctx.nccl->version();
    log_groups(ctx, nccl + ", bootstrap " + cfg.parallel.bootstrap, nccl);
    return;
  }
  if (!ctx.mpi) return build_groups(ctx, cfg);
  auto api = make_nccl_api();
  const bool cuda = backend.device() == Device::CUDA;
  const GroupCommChoice c = choose_group_communicator(
      false, api != nullptr, cuda, ctx.local_size, api ? api->device_count() : 0);
  // Only CUDA runs ask the others (a CPU run's collective numbering stays as it was).
  if (cuda && all_agree(*ctx.world, c.nccl)) {
    const NcclApi::Stream compute = api->compute_stream_of(backend);
    build_nccl_groups_over_mpi(ctx, std::move(api), compute, timeout);
    log_groups(ctx, "MPI " + mpi_library_version(), "NCCL " + ctx.nccl->version());
    return;
  }
  build_groups(ctx, cfg);
  log_groups(ctx, "MPI " + mpi_library_version(),
             "MPI (not NCCL: " + (c.nccl ? std::string("a rank on another node cannot use it") : c.reason) + ")");
}

std::shared_ptr<PeerDirectory> exchange_peers(ParallelContext& ctx) {
  if (ctx.world->size() == 1) {
    ctx.startup.reset();
    return nullptr;
  }
  auto peers = PeerDirectory::exchange(*ctx.world);
  ctx.startup.reset();  // start-up is over: collectives from here have their own deadline
  if (ctx.world->rank() == 0) {
    const RankMap map = describe_rank_map(peers->hosts(), ctx.grid.tp());
    log::info("{}", map.line);
    for (const auto& w : map.warnings) log::warn("{}", w);
  }
  return peers;
}

// ---- shutdown ------------------------------------------------------------------------------------

void release_groups(ParallelContext& ctx) {
  ctx.dp.reset();
  ctx.tp.reset();
  ctx.world.reset();
  ctx.nccl_world.reset();
  ctx.nccl.reset();
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
