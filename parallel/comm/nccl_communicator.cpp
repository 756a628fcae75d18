// NcclCommunicator: host-side logic of the NCCL communicator (see nccl_communicator.h): stream
// ordering, host staging, the watchdog and the fault path. All NCCL/CUDA calls go through
// NcclApi, so this file is compiled and unit-tested in every build.
#include "parallel/comm/nccl_communicator.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "core/common/error.h"

namespace cr {

namespace {

using Clock = std::chrono::steady_clock;

class DoneWork final : public Work {
 public:
  void wait() override {}
};

// An event destroyed on every path out of a scope, the fault path (which throws in tests)
// included.
struct ScopedEvent {
  NcclApi& api;
  NcclApi::Event e;
  ~ScopedEvent() { api.destroy_event(e); }
};

std::string op_name(const char* base, ReduceOp op) {
  return fmt::format("{}({})", base, op == ReduceOp::Sum ? "sum" : "max");
}

double seconds(std::chrono::milliseconds t) { return t.count() / 1000.0; }

// Polls fast first (a collective on one node finishes in microseconds), then backs off so a
// waiting rank leaves the CPU to ranks still computing.
void backoff(int spins) {
  if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
}

}  // namespace

NcclStaging plan_staging(NcclApi& api, const void* send, const void* recv) {
  // A null pointer (an empty buffer) says nothing about where the other one lives.
  const int known = (send != nullptr) + (recv != nullptr);
  const int on_device = (send && api.is_device_pointer(send)) + (recv && api.is_device_pointer(recv));
  if (on_device == known) return NcclStaging::Device;
  CR_CHECK(on_device == 0, "NCCL collective with one buffer in host and one in device memory "
           "(send {}, recv {}): pass both on the GPU or both on the host", send, recv);
  return NcclStaging::Host;
}

// ---- a pending collective: Work::wait is the watchdog ------------------------------------------

class NcclWork final : public Work {
 public:
  NcclWork(NcclCommunicator& c, CollectiveInfo info, NcclApi::Event done)
      : c_(c), info_(std::move(info)), done_(done) {}
  ~NcclWork() override { c_.api_->destroy_event(done_); }
  void wait() override {
    if (waited_) return;
    c_.api_->set_device(c_.device_);  // wait() may run on another thread than the issue
    c_.watch(info_, done_);
    // The compute stream's next kernels may read what the collective wrote.
    c_.api_->stream_wait(c_.compute_, done_);
    waited_ = true;
    c_.completed(info_);  // the flight recorder's "completed" (communicator.h, contract 4)
  }

 private:
  NcclCommunicator& c_;
  CollectiveInfo info_;
  NcclApi::Event done_;
  bool waited_ = false;
};

// ---- construction, init and split --------------------------------------------------------------

NcclCommunicator::NcclCommunicator(std::shared_ptr<NcclApi> api, NcclApi::Comm comm, int rank,
                                   int size, std::string name)
    : api_(std::move(api)), comm_(comm), rank_(rank), size_(size), name_(std::move(name)) {
  device_ = api_->current_device();
  stream_ = api_->create_stream();
}

std::unique_ptr<NcclCommunicator> NcclCommunicator::init(std::shared_ptr<NcclApi> api,
                                                         const NcclId& id, int rank, int size,
                                                         const std::string& name,
                                                         std::chrono::milliseconds timeout) {
  NcclApi::Comm comm = api->init_rank(id, size, rank);
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator(std::move(api), comm, rank, size, name));
  c->set_timeout(timeout);
  c->settle_init(timeout);
  return c;
}

std::unique_ptr<NcclCommunicator> NcclCommunicator::split(int color, int key, int new_rank,
                                                          int new_size,
                                                          const std::string& name) {
  if (aborted_) CR_THROW("cannot split {}: its NCCL communicator was aborted", name_);
  NcclApi::Comm child = api_->split(comm_, color, key);
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator(api_, child, new_rank, new_size, name));
  c->adopt_settings(*this);  // timeout, fault handler, flight recorder, test hooks
  c->compute_ = compute_;
  c->settle_init(timeout());
  settle_init(timeout());  // a non-blocking parent may report the split in progress too
  return c;
}

// Non-blocking init (config.blocking = 0): NCCL returns at once and the communicator reports
// ncclInProgress until every rank has joined. Polling lets a rank that never joins become a
// named error after the timeout instead of a hang inside ncclCommInitRank.
void NcclCommunicator::settle_init(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (int spins = 0;; spins++) {
    std::string why;
    const NcclPoll p = api_->async_error(comm_, &why);
    if (p == NcclPoll::Done) return;
    if (p == NcclPoll::Failed || Clock::now() > deadline) {
      aborted_ = true;
      api_->abort(comm_);
      CR_THROW("NCCL communicator {} (rank {} of {}, {}) {}", name_, rank_, size_, api_->version(),
               p == NcclPoll::Failed
                   ? "failed to initialise: " + why
                   : fmt::format("did not finish initialising within parallel.timeout_s = {} s "
                                 "(a rank never joined?)", seconds(timeout)));
    }
    backoff(spins);
  }
}

void NcclCommunicator::abort_job() const {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();
}

NcclCommunicator::~NcclCommunicator() {
  // An aborted communicator is gone already; destroying it again is undefined.
  if (!aborted_) api_->destroy(comm_, (int)std::min<long>(timeout().count(), 10000));
  if (dev_scratch_) api_->device_free(dev_scratch_);
  if (host_scratch_) api_->pinned_free(host_scratch_);
  api_->destroy_stream(stream_);
}

// ---- issuing collectives -----------------------------------------------------------------------

std::unique_ptr<Work> NcclCommunicator::issue(NcclCall call, size_t in_bytes, size_t out_bytes,
                                              CollectiveInfo info) {
  if (aborted_) fail(info, "cannot run: this NCCL communicator was aborted after an earlier failure");
  // The current GPU is per thread: with parallel.overlap a communication thread issues too.
  api_->set_device(device_);
  if (plan_staging(*api_, call.send, call.recv) == NcclStaging::Device)
    return issue_device(call, std::move(info));
  issue_staged(call, in_bytes, out_bytes, info);
  return std::make_unique<DoneWork>();
}

std::unique_ptr<Work> NcclCommunicator::issue_device(const NcclCall& call, CollectiveInfo info) {
  {
    // The collective reads what the compute stream wrote before this call.
    ScopedEvent ready{*api_, api_->create_event()};
    api_->record(ready.e, compute_);
    api_->stream_wait(stream_, ready.e);
  }
  enqueue_or_fail(call, info);
  NcclApi::Event done = api_->create_event();
  api_->record(done, stream_);
  return std::make_unique<NcclWork>(*this, std::move(info), done);
}

// Host buffers: pinned host -> device scratch -> collective -> device scratch -> pinned host,
// all on the comm stream, watched here. Pinned memory keeps the device-to-host copy
// asynchronous: with pageable memory cudaMemcpyAsync would block this thread until the
// collective finished, outside the watchdog's reach.
void NcclCommunicator::issue_staged(NcclCall call, size_t in_bytes, size_t out_bytes,
                                    const CollectiveInfo& info) {
  const bool in_place = call.send == call.recv;  // all_reduce, broadcast
  reserve_scratch(in_place ? in_bytes : in_bytes + out_bytes);
  char* dev_in = static_cast<char*>(dev_scratch_);
  char* dev_out = in_place ? dev_in : dev_in + in_bytes;
  char* host_in = static_cast<char*>(host_scratch_);
  char* host_out = in_place ? host_in : host_in + in_bytes;
  void* user_out = call.recv;
  if (in_bytes) std::memcpy(host_in, call.send, in_bytes);
  api_->copy_async(dev_in, host_in, in_bytes, stream_);
  call.send = dev_in;
  call.recv = dev_out;
  enqueue_or_fail(call, info);
  api_->copy_async(host_out, dev_out, out_bytes, stream_);
  ScopedEvent done{*api_, api_->create_event()};
  api_->record(done.e, stream_);
  watch(info, done.e);
  if (out_bytes) std::memcpy(user_out, host_out, out_bytes);
  completed(info);  // flight recorder (contract 4)
}

// On a non-blocking communicator an enqueue may return ncclInProgress: the collective is not on
// the stream yet, and nothing may follow it there (an event recorded now could fire before the
// collective runs) until ncclCommGetAsyncError says ncclSuccess. So settle it here, watched.
void NcclCommunicator::enqueue_or_fail(const NcclCall& call, const CollectiveInfo& info) {
  try {
    api_->enqueue(call, comm_, stream_);
  } catch (const Error& e) {
    abort_and_fail(info, "could not be issued: " + e.message());
  }
  const auto deadline = Clock::now() + timeout();
  for (int spins = 0;; spins++) {
    std::string why;
    const NcclPoll p = api_->async_error(comm_, &why);
    if (p == NcclPoll::Done) return;
    if (p == NcclPoll::Failed) abort_and_fail(info, "failed while being issued: " + why);
    if (Clock::now() > deadline)
      abort_and_fail(info, fmt::format("was not issued within parallel.timeout_s = {} s",
                                       seconds(timeout())));
    backoff(spins);
  }
}

void NcclCommunicator::reserve_scratch(size_t bytes) {
  if (bytes <= scratch_bytes_) return;
  const size_t grow = std::max<size_t>(bytes, 2 * scratch_bytes_);
  if (dev_scratch_) api_->device_free(dev_scratch_);
  if (host_scratch_) api_->pinned_free(host_scratch_);
  dev_scratch_ = host_scratch_ = nullptr;
  scratch_bytes_ = 0;
  dev_scratch_ = api_->device_alloc(grow);
  host_scratch_ = api_->pinned_alloc(grow);
  scratch_bytes_ = grow;
}

// ---- the watchdog and the fault path -----------------------------------------------------------

// Polls the collective's completion event and the communicator's asynchronous error against
// timeout(). On an error or timeout: abort the NCCL communicator (which unblocks its kernels on
// this GPU) and report through fail(), which ends the job. Never waits without a deadline.
void NcclCommunicator::watch(const CollectiveInfo& info, NcclApi::Event done) {
  const auto deadline = Clock::now() + timeout();
  for (int spins = 0;; spins++) {
    if (aborted_) fail(info, "this NCCL communicator was aborted after an earlier failure");
    std::string why;
    const NcclPoll e = api_->event_query(done, &why);
    if (e == NcclPoll::Done) return;
    if (e == NcclPoll::Failed) abort_and_fail(info, "failed on the GPU: " + why);
    if (api_->async_error(comm_, &why) == NcclPoll::Failed)
      abort_and_fail(info, "failed in NCCL: " + why);
    if (Clock::now() > deadline)
      abort_and_fail(info, fmt::format("did not complete within parallel.timeout_s = {} s",
                                       seconds(timeout())));
    backoff(spins);
  }
}

void NcclCommunicator::abort_and_fail(const CollectiveInfo& info, const std::string& why) {
  if (!aborted_) {
    aborted_ = true;
    api_->abort(comm_);
  }
  fail(info, fmt::format("{} ({}; NCCL communicator aborted)", why, api_->version()));
}

// ---- the collectives ---------------------------------------------------------------------------

std::unique_ptr<Work> NcclCommunicator::all_reduce_async(float* buf, size_t n, ReduceOp op,
                                                         const char* label) {
  const size_t b = n * sizeof(float);
  auto info = next(op_name("all_reduce", op).c_str(), b, label);
  return issue({NcclColl::AllReduce, NcclDType::F32, op, buf, buf, n, 0}, b, b, std::move(info));
}

std::unique_ptr<Work> NcclCommunicator::reduce_scatter_async(const float* send, float* recv,
                                                             size_t n, ReduceOp op,
                                                             const char* label) {
  const size_t b = n * sizeof(float);
  auto info = next(op_name("reduce_scatter", op).c_str(), b * size_, label);
  return issue({NcclColl::ReduceScatter, NcclDType::F32, op, send, recv, n, 0}, b * size_, b,
               std::move(info));
}

std::unique_ptr<Work> NcclCommunicator::all_gather_async(const float* send, float* recv, size_t n,
                                                         const char* label) {
  const size_t b = n * sizeof(float);
  auto info = next("all_gather", b * size_, label);
  return issue({NcclColl::AllGather, NcclDType::F32, ReduceOp::Sum, send, recv, n, 0}, b,
               b * size_, std::move(info));
}

std::unique_ptr<Work> NcclCommunicator::broadcast_async(float* buf, size_t n, int root,
                                                        const char* label) {
  const size_t b = n * sizeof(float);
  auto info = next("broadcast", b, label);
  return issue({NcclColl::Broadcast, NcclDType::F32, ReduceOp::Sum, buf, buf, n, root}, b, b,
               std::move(info));
}

// A one-float all-reduce through the staging scratch: complete only once every rank joined.
void NcclCommunicator::barrier(const char* label) {
  float token = 0.f;
  auto info = next("barrier", 0, label);
  issue({NcclColl::AllReduce, NcclDType::F32, ReduceOp::Sum, &token, &token, 1, 0}, sizeof token,
        sizeof token, std::move(info))->wait();
}

// Two all-gathers, staged through the host: every rank's length, then every rank's bytes padded
// to the longest (NCCL gathers equal counts).
std::vector<std::string> NcclCommunicator::all_gather_bytes(const std::string& mine,
                                                           const char* label) {
  const int64_t len = (int64_t)mine.size();
  std::vector<int64_t> lens((size_t)size_);
  issue({NcclColl::AllGather, NcclDType::I64, ReduceOp::Sum, &len, lens.data(), 1, 0},
        sizeof len, sizeof len * size_,
        next("all_gather_bytes(lengths)", sizeof len * size_, label))->wait();
  const size_t longest = (size_t)*std::max_element(lens.begin(), lens.end());
  std::vector<std::string> out((size_t)size_);
  if (longest == 0) return out;  // every rank sees the same lengths: all skip alike
  std::string padded(longest, '\0');
  std::memcpy(padded.data(), mine.data(), mine.size());
  std::string all(longest * size_, '\0');
  issue({NcclColl::AllGather, NcclDType::U8, ReduceOp::Sum, padded.data(), all.data(), longest, 0},
        longest, longest * size_, next("all_gather_bytes", longest * size_, label))->wait();
  for (int r = 0; r < size_; r++) out[r] = all.substr(longest * r, (size_t)lens[r]);
  return out;
}

}  // namespace cr
