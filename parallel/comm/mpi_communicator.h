// The MPI implementation of Communicator: non-blocking MPI collectives polled against a deadline,
// so a missing peer becomes a reported, job-ending error instead of a hang. Sub-communicators
// (TP and DP groups) come from MPI_Comm_split.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "parallel/comm/communicator.h"

namespace cr {

class MpiCommunicator final : public Communicator {
 public:
  // Wraps MPI_COMM_WORLD (MPI must be initialised).
  static std::unique_ptr<MpiCommunicator> world();
  // Collective over this communicator: ranks with equal color form one group, ordered by rank.
  // `label` names the group in reports ("tp", "dp").
  std::unique_ptr<MpiCommunicator> split(int color, const std::string& label) const;
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return name_; }

  std::unique_ptr<Work> all_reduce_async(float* buf, size_t n, ReduceOp op,
                                         const char* label) override;
  std::unique_ptr<Work> reduce_scatter_async(const float* send, float* recv, size_t n, ReduceOp op,
                                             const char* label) override;
  std::unique_ptr<Work> all_gather_async(const float* send, float* recv, size_t n,
                                         const char* label) override;
  std::unique_ptr<Work> broadcast_async(float* buf, size_t n, int root, const char* label) override;
  void barrier(const char* label = "") override;
  std::vector<std::string> all_gather_bytes(const std::string& mine, const char* label = "") override;

  MPI_Comm comm() const { return comm_; }

 private:
  MpiCommunicator(MPI_Comm comm, const std::string& label, bool owned);
  [[noreturn]] void abort_job() const override;
  friend class MpiWork;

  MPI_Comm comm_;
  bool owned_;
  int rank_ = 0, size_ = 1;
  std::string name_;
};

// MPI's library version string, for logs and error reports.
std::string mpi_library_version();

}  // namespace cr
