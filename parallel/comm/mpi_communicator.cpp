// The MPI Communicator (see mpi_communicator.h): non-blocking MPI collectives polled against the
// deadline, each reported to the flight recorder as started / completed / failed.
#include "parallel/comm/mpi_communicator.h"

#include <chrono>
#include <cstring>
#include <functional>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/common/error.h"
#include "parallel/comm/flight_recorder.h"

namespace cr {

namespace {

// One check macro shape for every MPI call: the error string, the call, file:line.
#define CR_MPI_CHECK(call)                                                        \
  do {                                                                            \
    int rc_ = (call);                                                             \
    if (rc_ != MPI_SUCCESS) {                                                     \
      char msg_[MPI_MAX_ERROR_STRING];                                            \
      int len_ = 0;                                                               \
      MPI_Error_string(rc_, msg_, &len_);                                         \
      CR_THROW("MPI call {} failed: {} ({})", #call, std::string(msg_, len_),     \
               mpi_library_version());                                            \
    }                                                                             \
  } while (0)

MPI_Op to_mpi(ReduceOp op) { return op == ReduceOp::Sum ? MPI_SUM : MPI_MAX; }
const char* op_name(const char* base, ReduceOp op) {
  static thread_local std::string s;
  s = fmt::format("{}({})", base, op == ReduceOp::Sum ? "sum" : "max");
  return s.c_str();
}

}  // namespace

// A pending MPI request, completed by polling MPI_Test until the communicator's deadline.
class MpiWork final : public Work {
 public:
  // then: run once the request completes (an in-place reduce-scatter moving its result).
  MpiWork(const MpiCommunicator& comm, CollectiveInfo info, MPI_Request req,
          std::function<void()> then = nullptr)
      : comm_(comm), info_(std::move(info)), req_(req), then_(std::move(then)) {}
  void wait() override {
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + comm_.timeout();
    int done = 0;
    for (int spins = 0;; spins++) {
      CR_MPI_CHECK(MPI_Test(&req_, &done, MPI_STATUS_IGNORE));
      if (done) {
        if (then_) then_();
        comm_.completed(info_);  // the flight recorder's "completed" (contract 4)
        return;
      }
      if (Clock::now() > deadline)
        comm_.fail(info_, fmt::format("did not complete within parallel.timeout_s = {} s",
                                      comm_.timeout().count() / 1000.0));
      // Spin briefly (collectives on one node finish in microseconds), then back off so a
      // waiting rank leaves the core to the ranks still computing.
      if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

 private:
  const MpiCommunicator& comm_;
  CollectiveInfo info_;
  MPI_Request req_;
  std::function<void()> then_;
};

std::string mpi_library_version() {
  char v[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(v, &len);
  std::string s(v, len);
  const auto nl = s.find_first_of(",\n");
  return nl == std::string::npos ? s : s.substr(0, nl);
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, const std::string& label, bool owned)
    : comm_(comm), owned_(owned) {
  CR_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  CR_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  // Name the group by its world ranks: "tp[4,5,6,7]".
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  std::vector<int> members(size_);
  CR_MPI_CHECK(MPI_Allgather(&world_rank, 1, MPI_INT, members.data(), 1, MPI_INT, comm_));
  name_ = fmt::format("{}[{}]", label, fmt::join(members, ","));
}

MpiCommunicator::~MpiCommunicator() {
  if (owned_) MPI_Comm_free(&comm_);
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::world() {
  return std::unique_ptr<MpiCommunicator>(new MpiCommunicator(MPI_COMM_WORLD, "world", false));
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::split(int color, const std::string& label) const {
  MPI_Comm sub;
  CR_MPI_CHECK(MPI_Comm_split(comm_, color, rank_, &sub));
  auto c = std::unique_ptr<MpiCommunicator>(new MpiCommunicator(sub, label, true));
  c->adopt_settings(*this);  // timeout, fault handler, flight recorder, test hooks
  if (c->recorder()) c->recorder()->add_group(c->name());
  return c;
}

void MpiCommunicator::abort_job() const {
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();
}

std::unique_ptr<Work> MpiCommunicator::all_reduce_async(float* buf, size_t n, ReduceOp op,
                                                        const char* label) {
  auto info = next(op_name("all_reduce", op), n * sizeof(float), label);
  MPI_Request req;
  CR_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, to_mpi(op), comm_, &req));
  return std::make_unique<MpiWork>(*this, std::move(info), req);
}

std::unique_ptr<Work> MpiCommunicator::reduce_scatter_async(const float* send, float* recv,
                                                            size_t n, ReduceOp op,
                                                            const char* label) {
  auto info = next(op_name("reduce_scatter", op), n * size_ * sizeof(float), label);
  MPI_Request req;
  if (recv == send + (size_t)rank_ * n) {  // in place: MPI leaves the result at the start
    float* all = const_cast<float*>(send);
    CR_MPI_CHECK(MPI_Ireduce_scatter_block(MPI_IN_PLACE, all, (int)n, MPI_FLOAT, to_mpi(op), comm_, &req));
    return std::make_unique<MpiWork>(*this, std::move(info), req, [all, recv, n] {
      if (recv != all) std::memcpy(recv, all, n * sizeof(float));  // disjoint: rank >= 1
    });
  }
  CR_MPI_CHECK(MPI_Ireduce_scatter_block(send, recv, (int)n, MPI_FLOAT, to_mpi(op), comm_, &req));
  return std::make_unique<MpiWork>(*this, std::move(info), req);
}

std::unique_ptr<Work> MpiCommunicator::all_gather_async(const float* send, float* recv, size_t n,
                                                        const char* label) {
  auto info = next("all_gather", n * size_ * sizeof(float), label);
  MPI_Request req;
  const bool in_place = send == recv + (size_t)rank_ * n;
  CR_MPI_CHECK(MPI_Iallgather(in_place ? MPI_IN_PLACE : send, in_place ? 0 : (int)n, MPI_FLOAT, recv,
                              (int)n, MPI_FLOAT, comm_, &req));
  return std::make_unique<MpiWork>(*this, std::move(info), req);
}

std::unique_ptr<Work> MpiCommunicator::broadcast_async(float* buf, size_t n, int root,
                                                       const char* label) {
  auto info = next("broadcast", n * sizeof(float), label);
  MPI_Request req;
  CR_MPI_CHECK(MPI_Ibcast(buf, (int)n, MPI_FLOAT, root, comm_, &req));
  return std::make_unique<MpiWork>(*this, std::move(info), req);
}

void MpiCommunicator::barrier(const char* label) {
  auto info = next("barrier", 0, label);
  MPI_Request req;
  CR_MPI_CHECK(MPI_Ibarrier(comm_, &req));
  MpiWork(*this, std::move(info), req).wait();
}

std::vector<std::string> MpiCommunicator::all_gather_bytes(const std::string& mine,
                                                          const char* label) {
  // Two steps: the lengths, then the bytes (MPI counts are ints: metadata stays far below 2 GB).
  CR_CHECK(mine.size() < (size_t)INT32_MAX / (size_t)size_, "all_gather_bytes: {} bytes is too many",
           mine.size());
  int len = (int)mine.size();
  std::vector<int> lens(size_);
  MPI_Request req;
  // next() before each MPI call: the flight recorder's "started" means handed to MPI.
  auto info = next("all_gather_bytes(lengths)", sizeof(int) * size_, label);
  CR_MPI_CHECK(MPI_Iallgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, comm_, &req));
  MpiWork(*this, std::move(info), req).wait();
  std::vector<int> displs(size_);
  int total = 0;
  for (int r = 0; r < size_; r++) {
    displs[r] = total;
    total += lens[r];
  }
  std::string all((size_t)total, '\0');
  info = next("all_gather_bytes", (size_t)total, label);
  CR_MPI_CHECK(MPI_Iallgatherv(mine.data(), len, MPI_BYTE, all.data(), lens.data(), displs.data(),
                               MPI_BYTE, comm_, &req));
  MpiWork(*this, std::move(info), req).wait();
  std::vector<std::string> out(size_);
  for (int r = 0; r < size_; r++) out[r] = all.substr((size_t)displs[r], (size_t)lens[r]);
  return out;
}

}  // namespace cr
