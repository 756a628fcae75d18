// The NCCL implementation of Communicator: collectives on DEVICE buffers, on the communicator's
// own CUDA stream, ordered with the compute stream by events.
//
// Where it sits: build_groups (launcher/distributed.cpp) creates one per TP and DP group on a
// CUDA run with one GPU per rank (the MPI world stays for control traffic), or every group with
// parallel.bootstrap file:DIR. It calls NCCL only through NcclApi (nccl_api.h), so everything
// here runs in the CPU unit tests against a fake.
//
// Stream ordering of a collective on device buffers (float* are device pointers):
//   compute stream: ... kernels ... [record ready]                  [wait done] next kernels ...
//   comm stream:                    [wait ready] collective [record done]
// The host returns from *_async at once; Work::wait() is the watchdog: it polls `done` and
// ncclCommGetAsyncError against timeout(), and on an error or timeout aborts the NCCL
// communicator (exactly once) and reports the collective through fail() (contract 3 of
// communicator.h). It never hangs.
//
// Host pointers (the loss scalar, the stop flag, all_gather_bytes, barrier) are detected with
// NcclApi::is_device_pointer and staged through a device scratch: pinned host -> device ->
// collective -> device -> pinned host. A staged collective completes (and is watched) inside the
// call, so its scratch is free again when the call returns. Callers that know the communicator
// takes device memory (device_memory()) can skip staging through the host themselves.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "parallel/comm/communicator.h"
#include "parallel/comm/nccl_api.h"

namespace cr {

// Where a collective's buffers live, decided from the pointers (host staging or not). Mixed
// host/device buffers in one collective are a caller's bug and throw.
enum class NcclStaging { Device, Host };
NcclStaging plan_staging(NcclApi& api, const void* send, const void* recv);

class NcclCommunicator final : public Communicator {
 public:
  // Joins a new communicator of `size` ranks from `id` (every rank calls it) and waits, polling,
  // until NCCL finished initialising (throws, naming `name`, on an error or after `timeout`).
  static std::unique_ptr<NcclCommunicator> init(std::shared_ptr<NcclApi> api, const NcclId& id,
                                                int rank, int size, const std::string& name,
                                                std::chrono::milliseconds timeout);
  // Collective over this communicator (ncclCommSplit): ranks with equal color form one group,
  // group rank ordered by key. `name` is the new group's report name ("tp[4,5,6,7]").
  std::unique_ptr<NcclCommunicator> split(int color, int key, int new_rank, int new_size,
                                          const std::string& name);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return name_; }
  // Takes device pointers directly (callers may skip host staging); see the header comment.
  bool device_memory() const override { return true; }
  // The stream whose work a collective must follow and which must follow the collective. Null
  // (the legacy default stream) until set.
  void set_compute_stream(NcclApi::Stream s) { compute_ = s; }
  std::string nccl_version() const { return api_->version(); }
  bool aborted() const { return aborted_; }

  std::unique_ptr<Work> all_reduce_async(float* buf, size_t n, ReduceOp op,
                                         const char* label) override;
  std::unique_ptr<Work> reduce_scatter_async(const float* send, float* recv, size_t n, ReduceOp op,
                                             const char* label) override;
  std::unique_ptr<Work> all_gather_async(const float* send, float* recv, size_t n,
                                         const char* label) override;
  std::unique_ptr<Work> broadcast_async(float* buf, size_t n, int root, const char* label) override;
  void barrier(const char* label = "") override;
  std::vector<std::string> all_gather_bytes(const std::string& mine, const char* label = "") override;

 private:
  NcclCommunicator(std::shared_ptr<NcclApi> api, NcclApi::Comm comm, int rank, int size,
                   std::string name);
  friend class NcclWork;

  void settle_init(std::chrono::milliseconds timeout);
  // Takes the job down: MPI_Abort when MPI started it; with parallel.bootstrap file:DIR there is
  // no job-wide abort, so this process ends and the launcher (srun --kill-on-bad-exit=1, torchrun)
  // ends the others.
  [[noreturn]] void abort_job() const override;
  std::unique_ptr<Work> issue(NcclCall call, size_t in_bytes, size_t out_bytes, CollectiveInfo info);
  std::unique_ptr<Work> issue_device(const NcclCall& call, CollectiveInfo info);
  void issue_staged(NcclCall call, size_t in_bytes, size_t out_bytes, const CollectiveInfo& info);
  void enqueue_or_fail(const NcclCall& call, const CollectiveInfo& info);
  void watch(const CollectiveInfo& info, NcclApi::Event done);
  [[noreturn]] void abort_and_fail(const CollectiveInfo& info, const std::string& why);
  void reserve_scratch(size_t bytes);

  std::shared_ptr<NcclApi> api_;
  NcclApi::Comm comm_;
  int rank_, size_;
  std::string name_;
  NcclApi::Stream stream_ = nullptr;   // this communicator's own stream
  NcclApi::Stream compute_ = nullptr;  // the backend's stream (set_compute_stream)
  int device_ = 0;  // the GPU it was created on: made current on every thread that uses it
  bool aborted_ = false;
  void* dev_scratch_ = nullptr;  // host staging: device side
  void* host_scratch_ = nullptr;  // host staging: pinned host side
  size_t scratch_bytes_ = 0;
};

}  // namespace cr
