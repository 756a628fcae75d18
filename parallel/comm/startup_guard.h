// A bound on a job's start-up. MPI's wire-up runs in blocking calls that parallel.timeout_s does
// not cover: MPI_Init (PMIx exchange), and the first collectives, which open the connections
// between nodes (MPI_Allgather in the world communicator, MPI_Comm_split for the groups). A rank
// that cannot reach another there (a node's only route to a peer is down, or Open MPI picked an
// interface that exists on every node, such as docker0's 172.17.0.1) waits forever.
//
// The guard is armed before MPI_Init and disarmed once the ranks have exchanged their peer
// addresses (the first collective with its own deadline). If that takes longer than the
// timeout, a thread of the guard reports the stage and ends this process (exit status 1); the
// launcher (mpirun, srun --kill-on-bad-exit) then ends the rest of the job.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace cr {

class StartupGuard {
 public:
  // on_expire(stage, seconds): what to do when the timeout passes; the default prints one
  // `[rank N] error: start-up ...` line naming the stage and the usual cause, and _Exit(1)s.
  using Expire = std::function<void(const std::string& stage, double seconds)>;
  StartupGuard(std::chrono::milliseconds timeout, std::string first_stage, Expire on_expire = nullptr);
  ~StartupGuard();  // disarms
  StartupGuard(const StartupGuard&) = delete;
  StartupGuard& operator=(const StartupGuard&) = delete;

  void stage(std::string what);  // the step now running, for the report
  void disarm();                 // start-up is over: the guard stops, nothing is reported

 private:
  void run();
  const std::chrono::milliseconds timeout_;
  Expire on_expire_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string stage_;
  bool done_ = false;
  std::thread thread_;  // last: starts once the members it reads exist
};

}  // namespace cr
