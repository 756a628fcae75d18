// The NCCL communicator on a real GPU (label gpu; exit 77 where this build has no NCCL or no GPU
// is visible). What the unit tests (tests/unit/test_nccl_logic.cpp, a fake NCCL) cannot check:
//   collectives  all_reduce(sum, max), reduce_scatter, all_gather, broadcast on DEVICE buffers and
//                all_gather_bytes / barrier (host, staged) against closed forms (tests/dist/
//                comm_test.cpp's inputs), on a 1-rank communicator; under mpirun on the whole
//                world when NCCL accepts it (one GPU per rank). NCCL refuses two ranks on one
//                GPU: that is detected and reported, and the MPI path the trainer then takes
//                (device buffers staged through host memory) is checked instead.
//   watchdog     init: a 2-rank communicator whose second rank never joins ends within the
//                timeout naming the group; collective: with the compute stream stalled the
//                collective never starts, and wait() aborts within the timeout naming it; under
//                mpirun with NCCL: the last rank never issues collective #2, the others end
//                naming it.
// One line per check: "NCCLCHECK check=<name> result=ok|FAIL|skip detail=..."; exit 0 when none
// failed.
#include <mpi.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#if CR_TEST_NCCL_CUDA
#include <cuda_runtime.h>
#endif

#include "core/common/error.h"
#include "parallel/comm/mpi_communicator.h"
#include "parallel/comm/nccl_bootstrap.h"
#include "parallel/comm/nccl_communicator.h"

using namespace cr;
using namespace std::chrono_literals;

namespace {

int failures = 0;
// Progress through a check, so a hang in the log names the call it is in.
void stage(const char* what) {
  std::printf("NCCLSTAGE rank=%d %s\n", process_identity().rank, what);
  std::fflush(stdout);
}
void report(const std::string& check, bool ok, const std::string& detail = "") {
  if (!ok) failures++;
  std::printf("NCCLCHECK rank=%d check=%s result=%s detail=%s\n", process_identity().rank,
              check.c_str(), ok ? "ok" : "FAIL", detail.c_str());
  std::fflush(stdout);
}

float value(int rank, size_t i) { return (float)(rank + 1) * 0.5f + (float)(i % 7); }

// Device buffers moved on the legacy default stream, waited for with a deadline.
struct Device {
  NcclApi& api;
  void sync() {
    NcclApi::Event e = api.create_event();
    api.record(e, nullptr);
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    std::string why;
    while (api.event_query(e, &why) == NcclPoll::Pending)
      if (std::chrono::steady_clock::now() > deadline) CR_THROW("GPU did not finish in 30 s");
    api.destroy_event(e);
  }
  float* put(const std::vector<float>& h) {
    auto* d = static_cast<float*>(api.device_alloc(h.size() * sizeof(float) + 4));
    api.copy_async(d, h.data(), h.size() * sizeof(float), nullptr);
    sync();
    return d;
  }
  std::vector<float> get(const float* d, size_t n) {
    std::vector<float> h(n);
    api.copy_async(h.data(), d, n * sizeof(float), nullptr);
    sync();
    return h;
  }
};

using Collective = std::function<void(float* send, float* recv, size_t n, int which)>;

// The closed forms of comm_test.cpp; `run` performs collective `which` (0 sum, 1 max, 2 reduce
// scatter, 3 all-gather, 4 broadcast from the last rank) on device buffers.
int check_closed_forms(Device& dev, int r, int n, const Collective& run) {
  const size_t len = 1000;
  int bad = 0;
  std::vector<float> a(len * n), mine(len);
  for (size_t i = 0; i < a.size(); i++) a[i] = value(r, i);
  for (size_t i = 0; i < len; i++) mine[i] = value(r, i);
  for (int which = 0; which < 5; which++) {
    float* send = dev.put(which == 4 ? std::vector<float>(len, r == n - 1 ? 42.f : -1.f)
                          : which == 3 ? mine : a);
    float* recv = dev.put(std::vector<float>(len * n, -7.f));
    run(send, recv, len, which);
    const auto out = dev.get(which <= 1 || which == 4 ? send : recv, which == 3 ? len * n : len);
    for (size_t i = 0; i < out.size(); i++) {
      const float want = which == 0 ? n * (n + 1) / 4.f + n * (float)(i % 7)
                         : which == 1 ? value(n - 1, i)
                         : which == 2 ? n * (n + 1) / 4.f + n * (float)((r * len + i) % 7)
                         : which == 3 ? value((int)(i / len), i % len)
                                      : 42.f;
      bad += out[i] != want;
    }
    dev.api.device_free(send);
    dev.api.device_free(recv);
  }
  return bad;
}

void check_nccl(NcclCommunicator& c, Device& dev, const std::string& what) {
  const int bad = check_closed_forms(dev, c.rank(), c.size(), [&](float* s, float* r, size_t n, int w) {
    if (w == 0) c.all_reduce(s, n, ReduceOp::Sum, "test.sum");
    if (w == 1) c.all_reduce(s, n, ReduceOp::Max, "test.max");
    if (w == 2) c.reduce_scatter(s, r, n, ReduceOp::Sum, "test.rs");
    if (w == 3) c.all_gather(s, r, n, "test.ag");
    if (w == 4) c.broadcast(s, n, c.size() - 1, "test.bcast");
  });
  report(what + ".device_collectives", bad == 0, std::to_string(bad) + "_wrong_elements");
  const auto all = c.all_gather_bytes(std::string((size_t)c.rank() + 1, 'a' + c.rank()), "test.bytes");
  bool ok = all.size() == (size_t)c.size();
  for (int q = 0; ok && q < c.size(); q++) ok = all[q] == std::string((size_t)q + 1, 'a' + q);
  float loss = 1.5f + c.rank();  // a host scalar: staged
  c.all_reduce(&loss, 1, ReduceOp::Sum, "test.loss");
  ok = ok && loss == 1.5f * c.size() + c.size() * (c.size() - 1) / 2.f;
  c.barrier("test.barrier");
  report(what + ".host_staged", ok);
}

// The path the trainer takes when NCCL cannot: MPI on host copies of the device buffers.
void check_mpi_staged(MpiCommunicator& c, Device& dev) {
  const int bad = check_closed_forms(dev, c.rank(), c.size(), [&](float* s, float* r, size_t n, int w) {
    const size_t in = w == 2 ? n * c.size() : n, out = w == 3 ? n * c.size() : n;
    auto hs = dev.get(s, in);
    std::vector<float> hr(out);
    if (w == 0) c.all_reduce(hs.data(), n, ReduceOp::Sum);
    if (w == 1) c.all_reduce(hs.data(), n, ReduceOp::Max);
    if (w == 2) c.reduce_scatter(hs.data(), hr.data(), n, ReduceOp::Sum);
    if (w == 3) c.all_gather(hs.data(), hr.data(), n);
    if (w == 4) c.broadcast(hs.data(), n, c.size() - 1);
    const bool in_place = w <= 1 || w == 4;
    dev.api.copy_async(in_place ? s : r, in_place ? hs.data() : hr.data(),
                       (in_place ? in : out) * sizeof(float), nullptr);
    dev.sync();
  });
  report("mpi_staged.device_collectives", bad == 0, std::to_string(bad) + "_wrong_elements");
}

// A 2-rank communicator whose second rank never comes: init must end, naming it.
void check_init_watchdog(std::shared_ptr<NcclApi> api) {
  const auto t0 = std::chrono::steady_clock::now();
  std::string msg;
  try {
    NcclCommunicator::init(api, api->unique_id(), 0, 2, "watchdog[0,1]", 3s);
  } catch (const Error& e) {
    msg = e.message();
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report("watchdog.init", msg.find("watchdog[0,1]") != std::string::npos && s < 20,
         std::to_string(s) + "s:" + msg.substr(0, 120));
}

#if CR_TEST_NCCL_CUDA
std::atomic<bool> release_stall{false};
void CUDART_CB stall(void*) {
  while (!release_stall) std::this_thread::sleep_for(1ms);
}
#endif

// The compute stream blocked by a host function: the collective waits behind it forever, and
// wait() must abort it within the timeout. Runs last: the stalled stream is never released (the
// aborted communicator's kernel must not run afterwards); the process ends with _Exit.
void check_collective_watchdog(std::shared_ptr<NcclApi> api, Device& dev) {
#if CR_TEST_NCCL_CUDA
  stage("collective watchdog: init");
  auto c = NcclCommunicator::init(api, api->unique_id(), 0, 1, "stall[0]", 10s);
  stage("collective watchdog: initialised");
  NcclApi::Stream compute = api->create_stream();
  c->set_compute_stream(compute);
  c->set_timeout(2s);
  std::string msg;
  c->set_fault_handler([&](const CollectiveInfo& ci, const std::string& why) {
    msg = ci.op + " #" + std::to_string(ci.seq) + " " + ci.label + ": " + why;
    throw std::runtime_error(msg);
  });
  float* buf = dev.put(std::vector<float>(16, 1.f));
  cudaLaunchHostFunc(static_cast<cudaStream_t>(compute), stall, nullptr);
  stage("collective watchdog: stream stalled, all_reduce");
  const auto t0 = std::chrono::steady_clock::now();
  try {
    c->all_reduce(buf, 16, ReduceOp::Sum, "watchdog.stall");
  } catch (const std::runtime_error&) {
  }
  stage("collective watchdog: all_reduce returned");
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report("watchdog.collective", msg.find("all_reduce(sum) #1 watchdog.stall") != std::string::npos &&
                                    c->aborted() && s < 10,
         std::to_string(s) + "s");
  c.release();  // never destroyed: its stream still waits behind the stall
#else
  report("watchdog.collective", true, "skip:built_without_the_CUDA_runtime_header");
#endif
}

// Under mpirun with NCCL on the world: the last rank never issues collective #2; the others must
// end, naming it, within the timeout (their fault handler reports, then the job is torn down).
void check_peer_watchdog(NcclCommunicator& c, Device& dev) {
  float* buf = dev.put(std::vector<float>(16, 1.f));
  c.set_timeout(5s);
  c.all_reduce(buf, 16, ReduceOp::Sum, "peer.first");
  if (c.rank() == c.size() - 1) {
    std::this_thread::sleep_for(15s);  // "never" joins; the others are long done by then
    return;
  }
  std::string msg;
  c.set_fault_handler([&](const CollectiveInfo& ci, const std::string& why) {
    msg = ci.op + " #" + std::to_string(ci.seq) + " " + ci.label + " on " + ci.group + ": " + why;
    throw std::runtime_error(msg);
  });
  try {
    c.all_reduce(buf, 16, ReduceOp::Sum, "peer.second");
  } catch (const std::runtime_error&) {
  }
  report("watchdog.peer", msg.find("all_reduce(sum) #2 peer.second") != std::string::npos,
         msg.substr(0, 160));
}

bool under_mpi() { return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMIX_RANK"); }

}  // namespace

int main(int argc, char** argv) {
  std::shared_ptr<NcclApi> api = make_nccl_api();
  const int gpus = api ? api->device_count() : 0;
  if (!api || gpus == 0) {
    std::printf("test_nccl: SKIP (%s)\n", api ? "no GPU visible" : "this build has no NCCL");
    return 77;
  }
  const bool mpi = under_mpi();
  std::unique_ptr<MpiCommunicator> world;
  if (mpi) {
    MPI_Init(&argc, &argv);
    world = MpiCommunicator::world();
    world->set_timeout(60s);
    process_identity().rank = world->rank();
    process_identity().world = world->size();
  }
  const int rank = world ? world->rank() : 0, size = world ? world->size() : 1;
  api->set_device(rank % gpus);
  std::printf("test_nccl: %s, %d GPU(s), rank %d of %d\n", api->version().c_str(), gpus, rank, size);
  Device dev{*api};
  try {
    auto one = NcclCommunicator::init(api, api->unique_id(), 0, 1, "single[0]", 30s);
    check_nccl(*one, dev, "one_rank");
    check_init_watchdog(api);
    if (world && size > 1) {
      std::unique_ptr<NcclCommunicator> all;
      std::string why;
      std::vector<int> members((size_t)size);
      std::iota(members.begin(), members.end(), 0);
      try {
        all = NcclCommunicator::init(api, exchange_nccl_id(*world, *api), rank, size,
                                     group_name("world", members), 20s);
      } catch (const Error& e) {
        why = e.message();
      }
      if (all) {
        check_nccl(*all, dev, "world");
        check_peer_watchdog(*all, dev);
        all.release();  // after the watchdog it is aborted (or hung): leave it to _Exit
      } else {
        report("world.nccl", true, "skip:NCCL_refused_" + std::to_string(size) + "_ranks_on_" +
                                       std::to_string(gpus) + "_GPU(s):" + why.substr(0, 160));
        check_mpi_staged(*world, dev);
      }
    }
    check_collective_watchdog(api, dev);
  } catch (const std::exception& e) {
    report("unexpected_error", false, e.what());
  }
  std::fflush(stdout);
  if (mpi) {
    int any = failures;  // every rank's verdict: rank 0 exits with the job's
    MPI_Allreduce(&failures, &any, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    failures = any;
    world.reset();
    MPI_Finalize();
  }
  std::_Exit(failures ? 1 : 0);  // no teardown: a stalled stream and aborted communicators remain
}
