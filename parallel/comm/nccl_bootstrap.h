// How NCCL ranks find each other: the ranks themselves (from Slurm's or torchrun's environment
// when MPI is not used), the exchange of the NCCL unique id (over an MPI control communicator, or
// through a file on a shared file system), and the color/key of each group split.
//
// Where it sits: launcher/distributed.cpp (init_processes, build_groups) -> here -> the NCCL
// communicators (nccl_communicator.h). Pure host logic: unit-tested with threads as ranks.
//
// The file bootstrap (parallel.bootstrap: file:DIR), for clusters where srun cannot start MPI
// ranks (no PMIx): rank 0 draws the id and writes DIR/<job-key>.ncclid atomically (a temp file,
// then rename); every other rank polls for that name until the timeout. The job key (Slurm job
// and step id, or torchrun's run id / master address, plus the restart count) is in the name, so
// a file left by another job or an earlier attempt is never read; rank 0 removes only the file it
// wrote, once every rank has joined the communicator.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "parallel/comm/communicator.h"
#include "parallel/comm/nccl_api.h"
#include "parallel/topology/rank_grid.h"

namespace cr {

// ---- ranks from the environment ----------------------------------------------------------------

struct EnvRanks {
  int rank = 0, world = 1, local_rank = 0;
  int local_size = 1;   // ranks on this node (LOCAL_WORLD_SIZE, SLURM_TASKS_PER_NODE), >= local_rank + 1
  std::string job_key;  // unique per job, step and restart: names the id file
  std::string source;   // "slurm" or "torchrun"
};
using EnvLookup = std::function<const char*(const char*)>;
// torchrun's RANK, WORLD_SIZE, LOCAL_RANK (+ TORCHELASTIC_RUN_ID and/or MASTER_ADDR:MASTER_PORT)
// when complete -- under torchrun inside a Slurm allocation these describe the worker, Slurm's
// the launcher -- else Slurm's SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_JOB_ID. Throws a
// one-line InputError naming what is missing when neither set is complete.
EnvRanks ranks_from_environment(const EnvLookup& env);
EnvRanks ranks_from_environment();  // std::getenv

// ---- the unique id through a shared directory ---------------------------------------------------

std::string nccl_id_path(const std::string& dir, const std::string& job_key);

// Rank 0's id file: written atomically on construction, removed (only this file) by remove() or
// on destruction.
class NcclIdFile {
 public:
  NcclIdFile(const std::string& dir, const std::string& job_key, const NcclId& id);
  ~NcclIdFile() { remove(); }
  NcclIdFile(const NcclIdFile&) = delete;
  NcclIdFile& operator=(const NcclIdFile&) = delete;
  const std::string& path() const { return path_; }
  void remove() noexcept;

 private:
  std::string path_;
  bool present_ = false;
};

// Every other rank: polls for the id file of `job_key` until `timeout`; then a one-line
// InputError naming the file and how long this rank waited. A file last written more than
// kNcclIdFileSlack before the call is ignored: a crashed earlier job's with the same key (ranks
// of one job start within seconds of each other; the slack also covers file-server clock skew).
inline constexpr std::chrono::seconds kNcclIdFileSlack{30};
NcclId wait_for_nccl_id(const std::string& dir, const std::string& job_key,
                        std::chrono::milliseconds timeout, int rank);

// ---- the unique id over a control communicator (MPI) --------------------------------------------

// The group's rank 0 draws the id (NcclApi::unique_id); every rank returns it. Collective over
// `ctrl` (all_gather_bytes: the communicator's timeout applies).
NcclId exchange_nccl_id(Communicator& ctrl, NcclApi& api);

// ---- group splits of the (tp x dp) grid -------------------------------------------------------

// ncclCommSplit's arguments for this rank's groups: ranks of equal color form a group, ordered
// by key. TP groups share a dp_rank and are ordered by tp_rank; DP groups the reverse
// (rank_grid.h), so the group rank equals the grid coordinate.
struct NcclSplit {
  int color, key;
};
NcclSplit tp_split(const RankGrid& g);
NcclSplit dp_split(const RankGrid& g);
// "tp[4,5,6,7]": the name MpiCommunicator gives the same group.
std::string group_name(const std::string& label, const std::vector<int>& world_ranks);

}  // namespace cr
