// The real NcclApi: libnccl and the CUDA runtime. Compiled into cr_parallel only where CUDA and
// NCCL are found (nccl.cmake defines CR_HAVE_NCCL=1 for it); nccl_none.cpp stands in elsewhere.
// Everything that decides anything lives above, in nccl_communicator.cpp and nccl_bootstrap.cpp;
// this file only translates calls and checks them.
//
// Checks (DESIGN convention 4): one generator macro, the shape of core/backend/cuda's
// CR_LIB_CHECK, whose error path here names NCCL's version beside CUDA's and the rank and host.
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "core/backend/cuda/cuda_backend.h"
#include "core/common/error.h"
#include "parallel/comm/nccl_api.h"

namespace cr {

namespace {

static_assert(sizeof(ncclUniqueId) == sizeof(NcclId), "NcclId must hold an ncclUniqueId");

std::string loaded_nccl_version() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return "NCCL ?";
  // Since 2.9 the code is major*10000 + minor*100 + patch.
  return fmt::format("NCCL {}.{}.{}", v / 10000, v / 100 % 100, v % 100);
}

// Never throws: it runs on the error path, where the driver may be the thing that failed.
std::string library_versions() {
  int runtime = 0, driver = 0;
  if (cudaRuntimeGetVersion(&runtime) != cudaSuccess) runtime = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
  return fmt::format("{} (built with {}.{}.{}), CUDA runtime {}, driver {}", loaded_nccl_version(),
                     NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH, runtime, driver);
}

[[noreturn]] void throw_nccl_library_error(const char* lib, long code, const char* status,
                                           const char* call, const char* file, int line) {
  const auto& id = process_identity();
  throw Error(fmt::format("{} error {} ({}) in {} on rank {} ({}) [{}]", lib, code,
                          status ? status : "?", call, id.rank, id.host, library_versions()),
              file, line);
}

// ok: the success value; describe(status) -> const char*.
#define CR_NCCL_LIB_CHECK(lib, expr, ok, describe)                                          \
  do {                                                                                      \
    auto cr_status_ = (expr);                                                               \
    if (cr_status_ != (ok)) [[unlikely]]                                                    \
      throw_nccl_library_error(lib, (long)cr_status_, describe(cr_status_), #expr, __FILE__, \
                               __LINE__);                                                   \
  } while (0)
#define CR_CUDA_RT_CHECK(expr) CR_NCCL_LIB_CHECK("CUDA", expr, cudaSuccess, cudaGetErrorString)
// Non-blocking communicators answer ncclInProgress for work they have started: not an error
// (the communicator polls ncclCommGetAsyncError for the outcome).
inline ncclResult_t started(ncclResult_t r) { return r == ncclInProgress ? ncclSuccess : r; }
#define CR_NCCL_CHECK(expr) \
  CR_NCCL_LIB_CHECK("NCCL", started(expr), ncclSuccess, ncclGetErrorString)

ncclComm_t C(NcclApi::Comm c) { return static_cast<ncclComm_t>(c); }
cudaStream_t S(NcclApi::Stream s) { return static_cast<cudaStream_t>(s); }
cudaEvent_t E(NcclApi::Event e) { return static_cast<cudaEvent_t>(e); }

ncclDataType_t to_nccl(NcclDType t) {
  return t == NcclDType::F32 ? ncclFloat32 : t == NcclDType::U8 ? ncclUint8 : ncclInt64;
}
ncclRedOp_t to_nccl(ReduceOp op) { return op == ReduceOp::Sum ? ncclSum : ncclMax; }

ncclConfig_t nonblocking_config() {
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;  // init, split and collectives return at once; we poll with a deadline
  return cfg;
}

class RealNcclApi final : public NcclApi {
 public:
  std::string version() const override { return loaded_nccl_version(); }
  int device_count() override {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;  // no driver: no GPU
  }
  void set_device(int device) override { CR_CUDA_RT_CHECK(cudaSetDevice(device)); }
  int current_device() override {
    int d = 0;
    CR_CUDA_RT_CHECK(cudaGetDevice(&d));
    return d;
  }

  NcclId unique_id() override {
    ncclUniqueId u;
    CR_NCCL_CHECK(ncclGetUniqueId(&u));
    NcclId id;
    std::memcpy(id.data(), &u, id.size());
    return id;
  }
  Comm init_rank(const NcclId& id, int nranks, int rank) override {
    ncclUniqueId u;
    std::memcpy(&u, id.data(), id.size());
    ncclConfig_t cfg = nonblocking_config();
    ncclComm_t c = nullptr;
    CR_NCCL_CHECK(ncclCommInitRankConfig(&c, nranks, u, rank, &cfg));
    return c;
  }
  Comm split(Comm parent, int color, int key) override {
    ncclConfig_t cfg = nonblocking_config();
    ncclComm_t c = nullptr;
    CR_NCCL_CHECK(ncclCommSplit(C(parent), color, key, &c, &cfg));
    return c;
  }
  NcclPoll async_error(Comm c, std::string* why) override {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(C(c), &state);
    if (r != ncclSuccess) state = r;
    if (state == ncclSuccess) return NcclPoll::Done;
    if (state == ncclInProgress) return NcclPoll::Pending;
    if (why) *why = fmt::format("{} ({})", ncclGetErrorString(state), ncclGetLastError(C(c)));
    return NcclPoll::Failed;
  }
  void abort(Comm c) noexcept override { ncclCommAbort(C(c)); }
  void destroy(Comm c, int budget_ms) noexcept override;
  void enqueue(const NcclCall& k, Comm c, Stream s) override;

  Stream create_stream() override {
    cudaStream_t s = nullptr;
    // Non-blocking: no implicit order with the legacy default stream; events order it.
    CR_CUDA_RT_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
  }
  void destroy_stream(Stream s) noexcept override { cudaStreamDestroy(S(s)); }
  Event create_event() override {
    cudaEvent_t e = nullptr;
    CR_CUDA_RT_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }
  void destroy_event(Event e) noexcept override { cudaEventDestroy(E(e)); }
  void record(Event e, Stream s) override { CR_CUDA_RT_CHECK(cudaEventRecord(E(e), S(s))); }
  void stream_wait(Stream s, Event e) override { CR_CUDA_RT_CHECK(cudaStreamWaitEvent(S(s), E(e), 0)); }
  NcclPoll event_query(Event e, std::string* why) override {
    const cudaError_t r = cudaEventQuery(E(e));
    if (r == cudaSuccess) return NcclPoll::Done;
    if (r == cudaErrorNotReady) return NcclPoll::Pending;
    if (why) *why = fmt::format("CUDA error {} ({})", (int)r, cudaGetErrorString(r));
    return NcclPoll::Failed;
  }
  bool is_device_pointer(const void* p) override {
    cudaPointerAttributes a{};
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
      (void)cudaGetLastError();  // an unregistered host pointer on old runtimes: not sticky
      return false;
    }
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
  }
  void* device_alloc(size_t bytes) override {
    void* p = nullptr;
    CR_CUDA_RT_CHECK(cudaMalloc(&p, bytes));
    return p;
  }
  void device_free(void* p) noexcept override { cudaFree(p); }
  void* pinned_alloc(size_t bytes) override {
    void* p = nullptr;
    CR_CUDA_RT_CHECK(cudaMallocHost(&p, bytes));
    return p;
  }
  void pinned_free(void* p) noexcept override { cudaFreeHost(p); }
  void copy_async(void* dst, const void* src, size_t bytes, Stream s) override {
    if (bytes) CR_CUDA_RT_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, S(s)));
  }
  Stream compute_stream_of(Backend& backend) override {
    // The only Backend reporting Device::CUDA is CudaBackend (core/backend/cuda).
    if (backend.device() != Device::CUDA) return nullptr;
    return static_cast<cuda::CudaBackend&>(backend).stream();
  }
};

// Finalize flushes the communicator's queued work and may need its peers; a peer that is gone
// must not hang shutdown, so it is polled against a budget and aborted past it.
void RealNcclApi::destroy(Comm c, int budget_ms) noexcept {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(budget_ms);
  ncclResult_t r = ncclCommFinalize(C(c));
  ncclResult_t state = r;
  while (r == ncclSuccess || r == ncclInProgress) {
    if (ncclCommGetAsyncError(C(c), &state) != ncclSuccess || state != ncclInProgress) break;
    if (std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if ((r == ncclSuccess || r == ncclInProgress) && state == ncclSuccess)
    ncclCommDestroy(C(c));
  else
    ncclCommAbort(C(c));
}

void RealNcclApi::enqueue(const NcclCall& k, Comm c, Stream s) {
  const ncclDataType_t t = to_nccl(k.dtype);
  switch (k.coll) {
    case NcclColl::AllReduce:
      CR_NCCL_CHECK(ncclAllReduce(k.send, k.recv, k.count, t, to_nccl(k.op), C(c), S(s)));
      return;
    case NcclColl::ReduceScatter:
      CR_NCCL_CHECK(ncclReduceScatter(k.send, k.recv, k.count, t, to_nccl(k.op), C(c), S(s)));
      return;
    case NcclColl::AllGather:
      CR_NCCL_CHECK(ncclAllGather(k.send, k.recv, k.count, t, C(c), S(s)));
      return;
    case NcclColl::Broadcast:
      CR_NCCL_CHECK(ncclBroadcast(k.send, k.recv, k.count, t, k.root, C(c), S(s)));
      return;
  }
}

}  // namespace

std::shared_ptr<NcclApi> make_nccl_api() { return std::make_shared<RealNcclApi>(); }
std::string nccl_build_version() { return loaded_nccl_version(); }

}  // namespace cr
