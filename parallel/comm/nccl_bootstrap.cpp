// Rank discovery from Slurm/torchrun, the NCCL unique-id exchange (file or control
// communicator) and the TP/DP split arguments: see nccl_bootstrap.h.
#include "parallel/comm/nccl_bootstrap.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/common/error.h"

namespace cr {

namespace {

// An integer environment value, or nullopt-like -1 when absent; malformed values are input errors.
int env_int(const EnvLookup& env, const char* name, int min_value) {
  const char* v = env(name);
  if (!v || !*v) return -1;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < min_value || x > 1 << 24)
    CR_INPUT_ERROR("parallel.bootstrap: {}='{}' is not a valid rank count or index", name, v);
  return (int)x;
}

std::string env_str(const EnvLookup& env, const char* name) {
  const char* v = env(name);
  return v ? v : "";
}

// File-name safe: the key becomes part of a path.
std::string sanitize(std::string s) {
  for (char& c : s)
    if (!std::isalnum((unsigned char)c) && c != '.' && c != '-' && c != '_') c = '_';
  return s;
}

std::string missing_of(const EnvLookup& env, std::initializer_list<const char*> names) {
  std::vector<std::string> m;
  for (const char* n : names)
    if (!env(n) || !*env(n)) m.push_back(n);
  return fmt::format("{}", fmt::join(m, ", "));
}

bool from_torchrun(const EnvLookup& env, EnvRanks& r) {
  r.rank = env_int(env, "RANK", 0);
  r.world = env_int(env, "WORLD_SIZE", 1);
  r.local_rank = env_int(env, "LOCAL_RANK", 0);
  std::string run_id = env_str(env, "TORCHELASTIC_RUN_ID");
  if (run_id == "none") run_id.clear();  // torchrun's default rdzv id: not unique
  const std::string addr = env_str(env, "MASTER_ADDR"), port = env_str(env, "MASTER_PORT");
  const std::string master = !addr.empty() && !port.empty() ? addr + ":" + port : "";
  if (r.rank < 0 || r.world < 0 || r.local_rank < 0 || (run_id.empty() && master.empty()))
    return false;
  r.job_key = "torchrun-" + run_id + (run_id.empty() || master.empty() ? "" : "-") + master;
  // An elastic restart re-runs every worker with the same run id: the count keeps the earlier
  // attempt's file from being read.
  const std::string restart = env_str(env, "TORCHELASTIC_RESTART_COUNT");
  if (!restart.empty()) r.job_key += "-r" + restart;
  r.local_size = std::max(env_int(env, "LOCAL_WORLD_SIZE", 1), r.local_rank + 1);
  r.source = "torchrun";
  return true;
}

bool from_slurm(const EnvLookup& env, EnvRanks& r) {
  r.rank = env_int(env, "SLURM_PROCID", 0);
  r.world = env_int(env, "SLURM_NTASKS", 1);
  r.local_rank = env_int(env, "SLURM_LOCALID", 0);
  const std::string job = env_str(env, "SLURM_JOB_ID");
  if (r.rank < 0 || r.world < 0 || r.local_rank < 0 || job.empty()) return false;
  // Each srun of a batch script is a step with its own ranks; a requeued job keeps its id.
  const std::string step = env_str(env, "SLURM_STEP_ID"), restart = env_str(env, "SLURM_RESTART_COUNT");
  r.job_key = "slurm-" + job + "." + (step.empty() ? "0" : step) +
              (restart.empty() ? "" : "-r" + restart);
  // "4(x2),3" names no node; the first count is a guess, local_rank + 1 a sure lower bound.
  r.local_size = std::max(std::atoi(env_str(env, "SLURM_TASKS_PER_NODE").c_str()), r.local_rank + 1);
  r.source = "slurm";
  return true;
}

std::string to_hex(const NcclId& id) {
  std::string s;
  for (char c : id) s += fmt::format("{:02x}", (unsigned char)c);
  return s;
}

// The file's content: a header naming the job key, then the id in hex. False while the file is
// absent or not (yet) complete.
bool parse_id_file(const std::string& path, const std::string& key, NcclId& id) {
  std::ifstream f(path);
  std::string magic, version, file_key, hex;
  if (!(f >> magic >> version >> file_key >> hex)) return false;
  if (magic != "chainrule-ncclid" || version != "1" || file_key != key || hex.size() != 2 * id.size())
    return false;
  for (size_t i = 0; i < id.size(); i++)
    id[i] = (char)std::stoi(hex.substr(2 * i, 2), nullptr, 16);
  return true;
}

}  // namespace

// ---- ranks from the environment ----------------------------------------------------------------

EnvRanks ranks_from_environment(const EnvLookup& env) {
  EnvRanks r;
  if (from_torchrun(env, r) || from_slurm(env, r)) {
    if (r.rank >= r.world || r.local_rank >= r.world)
      CR_INPUT_ERROR("parallel.bootstrap: {} says rank {} (local {}) of {} ranks", r.source, r.rank,
                     r.local_rank, r.world);
    r.job_key = sanitize(r.job_key);
    return r;
  }
  CR_INPUT_ERROR(
      "parallel.bootstrap file:DIR takes the ranks from Slurm (SLURM_PROCID, SLURM_NTASKS, "
      "SLURM_LOCALID, SLURM_JOB_ID; missing: {}) or torchrun (RANK, WORLD_SIZE, LOCAL_RANK and "
      "TORCHELASTIC_RUN_ID or MASTER_ADDR+MASTER_PORT; missing: {}); start with srun or torchrun",
      missing_of(env, {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_ID"}),
      missing_of(env, {"RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "MASTER_ADDR",
                       "MASTER_PORT"}));
}

EnvRanks ranks_from_environment() {
  return ranks_from_environment([](const char* n) { return (const char*)std::getenv(n); });
}

// ---- the unique id through a shared directory ---------------------------------------------------

std::string nccl_id_path(const std::string& dir, const std::string& job_key) {
  return (std::filesystem::path(dir) / (job_key + ".ncclid")).string();
}

NcclIdFile::NcclIdFile(const std::string& dir, const std::string& job_key, const NcclId& id)
    : path_(nccl_id_path(dir, job_key)) {
  // Readers poll for the final name, so it must appear complete: write a private temp file,
  // flush it to the file server, then rename (atomic within a directory, also on NFS).
  // A file of the same job key left by a job that died before removing it: gone before the new
  // id appears, so a reader sees no file or this job's.
  std::remove(path_.c_str());
  const std::string tmp = fmt::format("{}.tmp.{}", path_, (long)::getpid());
  const std::string text = fmt::format("chainrule-ncclid 1 {} {}\n", job_key, to_hex(id));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0)
    CR_INPUT_ERROR("parallel.bootstrap: cannot write {}: {} (is the directory there and writable?)",
                   tmp, std::strerror(errno));
  const bool ok = ::write(fd, text.data(), text.size()) == (ssize_t)text.size() && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || std::rename(tmp.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    CR_INPUT_ERROR("parallel.bootstrap: cannot publish {}: {}", path_, std::strerror(err));
  }
  present_ = true;
}

void NcclIdFile::remove() noexcept {
  if (present_) std::remove(path_.c_str());
  present_ = false;
}

NcclId wait_for_nccl_id(const std::string& dir, const std::string& job_key,
                        std::chrono::milliseconds timeout, int rank) {
  const std::string path = nccl_id_path(dir, job_key);
  const auto start = std::chrono::steady_clock::now();
  // This job's rank 0 started about when we did; a file written well before that is another
  // job's with the same key (torchrun's address:port key is reused), left by a crash.
  const auto oldest = std::filesystem::file_time_type::clock::now() - kNcclIdFileSlack;
  NcclId id{};
  for (;;) {
    std::error_code ec;
    const auto written = std::filesystem::last_write_time(path, ec);
    if (!ec && written >= oldest && parse_id_file(path, job_key, id)) return id;
    const auto waited = std::chrono::steady_clock::now() - start;
    if (waited > timeout)
      CR_INPUT_ERROR("parallel.bootstrap: rank {} waited {:.1f} s (parallel.timeout_s) for {}, "
                     "which rank 0 of this job writes; is {} shared by every node, and did rank 0 "
                     "start?", rank, std::chrono::duration<double>(waited).count(), path, dir);
    // A shared file system is slow to show new files; 20 polls a second is plenty.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// ---- the unique id over a control communicator --------------------------------------------------

NcclId exchange_nccl_id(Communicator& ctrl, NcclApi& api) {
  std::string mine;
  if (ctrl.rank() == 0) {
    const NcclId id = api.unique_id();
    mine.assign(id.begin(), id.end());
  }
  const auto all = ctrl.all_gather_bytes(mine, "nccl unique id");
  CR_CHECK(all.size() == (size_t)ctrl.size() && all[0].size() == sizeof(NcclId),
           "NCCL id exchange over {}: rank 0 sent {} bytes", ctrl.name(), all.empty() ? 0 : all[0].size());
  NcclId id;
  std::memcpy(id.data(), all[0].data(), id.size());
  return id;
}

// ---- group splits -------------------------------------------------------------------------------

NcclSplit tp_split(const RankGrid& g) { return {g.dp_rank(), g.tp_rank()}; }
NcclSplit dp_split(const RankGrid& g) { return {g.tp_rank(), g.dp_rank()}; }

std::string group_name(const std::string& label, const std::vector<int>& world_ranks) {
  return fmt::format("{}[{}]", label, fmt::join(world_ranks, ","));
}

}  // namespace cr
