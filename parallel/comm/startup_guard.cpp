// The start-up bound (see startup_guard.h).
#include "parallel/comm/startup_guard.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include <fmt/format.h>

#include "core/common/error.h"

namespace cr {

namespace {

// This process's rank as its launcher gave it: process_identity() learns it only from the world
// communicator, which may be what is stuck.
std::string launcher_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"})
    if (const char* r = std::getenv(v)) return r;
  return std::to_string(process_identity().rank);
}

void report_and_exit(const std::string& stage, double seconds) {
  const auto& id = process_identity();
  fmt::print(stderr,
             "[rank {}] error: start-up did not complete within parallel.timeout_s = {} s on {} "
             "(stuck in: {}): the ranks could not connect to each other. On nodes with several "
             "networks, pin Open MPI's TCP to the cluster network (NET_IF=eth0 with "
             "deploy/mpirun/run_mpirun.sh; OMPI_MCA_btl_tcp_if_include=eth0 under Slurm); see "
             "deploy/slurm/README.md\n",
             launcher_rank(), seconds, id.host, stage);
  std::fflush(stderr);
  std::_Exit(1);  // MPI cannot be called from here: the main thread is inside it
}

}  // namespace

StartupGuard::StartupGuard(std::chrono::milliseconds timeout, std::string first_stage,
                           Expire on_expire)
    : timeout_(timeout),
      on_expire_(on_expire ? std::move(on_expire) : Expire(report_and_exit)),
      stage_(std::move(first_stage)),
      thread_([this] { run(); }) {}

StartupGuard::~StartupGuard() {
  disarm();
  thread_.join();
}

void StartupGuard::stage(std::string what) {
  std::lock_guard<std::mutex> lock(mu_);
  stage_ = std::move(what);
}

void StartupGuard::disarm() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
  }
  cv_.notify_all();
}

void StartupGuard::run() {
  std::unique_lock<std::mutex> lock(mu_);
  if (cv_.wait_for(lock, timeout_, [&] { return done_; })) return;
  const std::string stage = stage_;
  lock.unlock();
  on_expire_(stage, timeout_.count() / 1000.0);
}

}  // namespace cr
