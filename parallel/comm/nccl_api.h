// NcclApi: the few NCCL and CUDA runtime calls the NCCL communicator makes, behind an interface.
//
// Where it sits: Communicators (DESIGN data flow) -> NcclCommunicator (nccl_communicator.h) ->
// NcclApi -> libnccl + cudart. Everything above this interface (staging, stream ordering, the
// watchdog, bootstrap, group splits) is host logic compiled into every build and unit-tested
// with a fake (tests/unit/test_nccl_logic.cpp); the real implementation (nccl_cuda.cpp) is
// compiled only where CUDA and NCCL exist, nccl_none.cpp elsewhere (make_nccl_api returns null).
//
// Handles are opaque (void*) so that this header needs neither nccl.h nor cuda_runtime.h.
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <string>

#include "parallel/comm/communicator.h"

namespace cr {

class Backend;

// ncclUniqueId's bytes (NCCL_UNIQUE_ID_BYTES = 128): opaque, exchanged by the bootstrap.
using NcclId = std::array<char, 128>;

// The state of an asynchronous thing (an event, a communicator) when polled.
enum class NcclPoll { Done, Pending, Failed };

enum class NcclDType { F32, U8, I64 };
inline size_t nccl_dtype_bytes(NcclDType t) {
  return t == NcclDType::F32 ? 4 : t == NcclDType::U8 ? 1 : 8;
}

enum class NcclColl { AllReduce, ReduceScatter, AllGather, Broadcast };

// One collective as NCCL takes it. `count` is NCCL's count: all_reduce/broadcast the buffer,
// reduce_scatter the received elements per rank, all_gather the sent elements per rank.
struct NcclCall {
  NcclColl coll = NcclColl::AllReduce;
  NcclDType dtype = NcclDType::F32;
  ReduceOp op = ReduceOp::Sum;
  const void* send = nullptr;
  void* recv = nullptr;
  size_t count = 0;
  int root = 0;
};

class NcclApi {
 public:
  using Comm = void*;
  using Stream = void*;
  using Event = void*;
  virtual ~NcclApi() = default;

  // "NCCL 2.28.9" (the loaded library's version), for logs and error reports.
  virtual std::string version() const = 0;
  virtual int device_count() = 0;
  virtual void set_device(int device) = 0;
  virtual int current_device() = 0;

  // ---- communicators (non-blocking: created Pending, settled by polling async_error) --------
  virtual NcclId unique_id() = 0;
  virtual Comm init_rank(const NcclId& id, int nranks, int rank) = 0;
  // Collective over `parent`: ranks with equal color form a group ordered by key.
  virtual Comm split(Comm parent, int color, int key) = 0;
  // ncclCommGetAsyncError: Done (ncclSuccess), Pending (ncclInProgress) or Failed (+ why).
  virtual NcclPoll async_error(Comm c, std::string* why) = 0;
  virtual void abort(Comm c) noexcept = 0;
  // Finalize (flush) and destroy; gives up and aborts after `budget_ms`. Never throws.
  virtual void destroy(Comm c, int budget_ms) noexcept = 0;
  // Enqueues one collective on `stream`. Throws cr::Error on an immediate failure.
  virtual void enqueue(const NcclCall& call, Comm c, Stream s) = 0;

  // ---- CUDA: streams, events, memory ----------------------------------------------------------
  virtual Stream create_stream() = 0;
  virtual void destroy_stream(Stream s) noexcept = 0;
  virtual Event create_event() = 0;
  virtual void destroy_event(Event e) noexcept = 0;
  virtual void record(Event e, Stream s) = 0;
  virtual void stream_wait(Stream s, Event e) = 0;  // s waits for e (no host blocking)
  virtual NcclPoll event_query(Event e, std::string* why) = 0;
  // True for memory the GPU addresses directly (cudaMalloc'd, managed); false for host memory,
  // pinned or not, which the communicator stages through its device scratch.
  virtual bool is_device_pointer(const void* p) = 0;
  virtual void* device_alloc(size_t bytes) = 0;
  virtual void device_free(void* p) noexcept = 0;
  virtual void* pinned_alloc(size_t bytes) = 0;  // page-locked host memory: async copies
  virtual void pinned_free(void* p) noexcept = 0;
  virtual void copy_async(void* dst, const void* src, size_t bytes, Stream s) = 0;
  // The stream a Backend computes on (CudaBackend::stream()); null for a CPU backend.
  virtual Stream compute_stream_of(Backend& backend) = 0;
};

// The real API where this build has CUDA and NCCL, else null. Shared: every communicator of a
// process (world, tp, dp) keeps it alive.
std::shared_ptr<NcclApi> make_nccl_api();
// "NCCL 2.28.9" in a build with NCCL, "" without.
std::string nccl_build_version();

}  // namespace cr
