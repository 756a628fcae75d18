// The NCCL communicator's host-side logic without a GPU: rank discovery from Slurm/torchrun,
// the file bootstrap with threads as ranks, the TP/DP split arguments, stream ordering, host
// staging, the watchdog (completion, async error, timeout; abort exactly once) and the
// communicator choice of build_groups. NCCL and CUDA are replaced by FakeNccl, which acts as if
// every peer contributed exactly what this rank did (a replicated world), so each collective has
// a closed-form result.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <unistd.h>

#include <fmt/format.h>

#include "core/common/error.h"
#include "launcher/distributed.h"
#include "parallel/comm/nccl_bootstrap.h"
#include "parallel/comm/nccl_communicator.h"

namespace cr {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// ---- the fake NCCL --------------------------------------------------------------------------------

struct FakeComm {
  int rank, size;
  int pending_polls = 0;  // async_error answers Pending this many times before Done
  bool never_ready = false, init_fails = false;
};
struct FakeEvent {
  std::string stream;
};

class FakeNccl final : public NcclApi {
 public:
  enum class Mode { Complete, Hang, AsyncError, EventError };
  Mode mode = Mode::Complete;
  int init_pending_polls = 3;
  bool init_never_ready = false;
  int enqueue_pending_polls = 0;  // a non-blocking enqueue answering ncclInProgress this long
  int aborts = 0, destroys = 0, copies = 0;
  std::vector<NcclCall> calls;
  std::vector<std::pair<int, int>> splits;  // (color, key)
  std::vector<std::string> trace;           // stream-ordering steps, in order
  NcclId id{};

  std::string version() const override { return "NCCL fake"; }
  int device_count() override { return 1; }
  void set_device(int d) override { device = d; }
  int current_device() override { return device; }
  int device = 0;
  NcclId unique_id() override {
    for (size_t i = 0; i < id.size(); i++) id[i] = (char)(i * 7 + 1);
    return id;
  }
  Comm init_rank(const NcclId&, int nranks, int rank) override { return make_comm(rank, nranks); }
  Comm split(Comm, int color, int key) override {
    splits.emplace_back(color, key);
    return make_comm(key, 1);
  }
  NcclPoll async_error(Comm c, std::string* why) override {
    auto* f = static_cast<FakeComm*>(c);
    if (f->init_fails) {
      *why = "ncclSystemError (fake: peer gone)";
      return NcclPoll::Failed;
    }
    if (f->never_ready) return NcclPoll::Pending;
    if (f->pending_polls > 0) {
      f->pending_polls--;
      if (!calls.empty()) trace.push_back("in progress");
      return NcclPoll::Pending;
    }
    if (mode == Mode::AsyncError && !calls.empty()) {
      *why = "ncclRemoteError (fake: a peer failed)";
      return NcclPoll::Failed;
    }
    return NcclPoll::Done;
  }
  void abort(Comm) noexcept override { aborts++; }
  void destroy(Comm, int) noexcept override { destroys++; }
  void enqueue(const NcclCall& k, Comm c, Stream s) override {
    calls.push_back(k);
    trace.push_back("enqueue on " + name(s));
    static_cast<FakeComm*>(c)->pending_polls = enqueue_pending_polls;
    replicated_world(k, *static_cast<FakeComm*>(c));
  }
  Stream create_stream() override { return new std::string("comm"); }
  void destroy_stream(Stream s) noexcept override { delete static_cast<std::string*>(s); }
  Event create_event() override { return new FakeEvent; }
  void destroy_event(Event e) noexcept override { delete static_cast<FakeEvent*>(e); }
  void record(Event e, Stream s) override {
    static_cast<FakeEvent*>(e)->stream = name(s);
    trace.push_back("record on " + name(s));
  }
  void stream_wait(Stream s, Event e) override {
    trace.push_back(name(s) + " waits for " + static_cast<FakeEvent*>(e)->stream);
  }
  NcclPoll event_query(Event, std::string* why) override {
    if (mode == Mode::Complete) return NcclPoll::Done;
    if (mode == Mode::EventError) {
      *why = "CUDA error 700 (fake: illegal address)";
      return NcclPoll::Failed;
    }
    return NcclPoll::Pending;
  }
  bool is_device_pointer(const void* p) override {
    for (auto& [base, n] : device_)
      if (p >= base && p < base + n) return true;
    return false;
  }
  void* device_alloc(size_t bytes) override {
    char* p = new char[bytes + 1];
    device_[p] = bytes + 1;
    return p;
  }
  void device_free(void* p) noexcept override {
    device_.erase(static_cast<char*>(p));
    delete[] static_cast<char*>(p);
  }
  void* pinned_alloc(size_t bytes) override { return new char[bytes + 1]; }
  void pinned_free(void* p) noexcept override { delete[] static_cast<char*>(p); }
  void copy_async(void* dst, const void* src, size_t bytes, Stream) override {
    copies++;
    std::memmove(dst, src, bytes);
  }
  Stream compute_stream_of(Backend&) override { return nullptr; }

  ~FakeNccl() override {
    for (auto* c : comms_) delete c;
  }

 private:
  static std::string name(Stream s) { return s ? *static_cast<std::string*>(s) : "compute"; }
  Comm make_comm(int rank, int size) {
    comms_.push_back(new FakeComm{rank, size, init_pending_polls, init_never_ready});
    return comms_.back();
  }
  // Every rank contributed the same send buffer.
  static void replicated_world(const NcclCall& k, const FakeComm& c) {
    const size_t b = nccl_dtype_bytes(k.dtype);
    if (k.coll == NcclColl::AllGather) {
      for (int r = 0; r < c.size; r++)
        std::memmove((char*)k.recv + r * k.count * b, k.send, k.count * b);
      return;
    }
    const char* from = (const char*)k.send + (k.coll == NcclColl::ReduceScatter ? c.rank * k.count * b : 0);
    std::memmove(k.recv, from, k.count * b);
    if (k.coll != NcclColl::Broadcast && k.op == ReduceOp::Sum && k.dtype == NcclDType::F32)
      for (size_t i = 0; i < k.count; i++) ((float*)k.recv)[i] *= (float)c.size;
  }
  std::map<char*, size_t> device_;
  std::vector<FakeComm*> comms_;
};

// The fault handler of the tests: the report as an exception.
struct Fault : std::runtime_error {
  using std::runtime_error::runtime_error;
};
void throw_fault(const CollectiveInfo& c, const std::string& why) {
  throw Fault(fmt::format("collective #{} {} ({} bytes) on {} [{}]: {}", c.seq, c.op, c.bytes,
                          c.group, c.label, why));
}

std::unique_ptr<NcclCommunicator> make_comm(const std::shared_ptr<FakeNccl>& api, int rank = 0,
                                            int size = 1) {
  auto c = NcclCommunicator::init(api, api->unique_id(), rank, size, "tp[4,5]", 2000ms);
  c->set_fault_handler(throw_fault);
  return c;
}

// ---- ranks from the environment ----------------------------------------------------------------

EnvLookup lookup(std::map<std::string, std::string> m) {
  auto held = std::make_shared<std::map<std::string, std::string>>(std::move(m));
  return [held](const char* n) -> const char* {
    auto it = held->find(n);
    return it == held->end() ? nullptr : it->second.c_str();
  };
}

TEST(NcclEnvRanks, Slurm) {
  const EnvRanks r = ranks_from_environment(lookup({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"},
      {"SLURM_LOCALID", "1"}, {"SLURM_JOB_ID", "4242"}, {"SLURM_STEP_ID", "3"},
      {"SLURM_TASKS_PER_NODE", "4(x2)"}}));
  EXPECT_EQ(r.source, "slurm");
  EXPECT_EQ(r.rank, 5);
  EXPECT_EQ(r.world, 8);
  EXPECT_EQ(r.local_rank, 1);
  EXPECT_EQ(r.local_size, 4);
  EXPECT_EQ(r.job_key, "slurm-4242.3");
}

TEST(NcclEnvRanks, TorchrunWinsOverTheSlurmAllocationItRunsIn) {
  const EnvRanks r = ranks_from_environment(lookup({{"RANK", "3"}, {"WORLD_SIZE", "4"},
      {"LOCAL_RANK", "3"}, {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "29500"},
      {"TORCHELASTIC_RUN_ID", "none"}, {"TORCHELASTIC_RESTART_COUNT", "2"},
      {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}, {"SLURM_LOCALID", "0"}, {"SLURM_JOB_ID", "9"}}));
  EXPECT_EQ(r.source, "torchrun");
  EXPECT_EQ(r.rank, 3);
  EXPECT_EQ(r.world, 4);
  EXPECT_EQ(r.job_key, "torchrun-node7_29500-r2");  // "none" is torchrun's default: not a key
}

TEST(NcclEnvRanks, IncompleteIsOneLineNamingWhatIsMissing) {
  try {
    ranks_from_environment(lookup({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"RANK", "0"}}));
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string m = e.message();
    EXPECT_EQ(m.find('\n'), std::string::npos);
    EXPECT_NE(m.find("missing: SLURM_LOCALID, SLURM_JOB_ID"), std::string::npos) << m;
    EXPECT_NE(m.find("WORLD_SIZE, LOCAL_RANK"), std::string::npos) << m;
  }
  EXPECT_THROW(ranks_from_environment(lookup({{"RANK", "4"}, {"WORLD_SIZE", "4"},
                                              {"LOCAL_RANK", "0"}, {"TORCHELASTIC_RUN_ID", "x"}})),
               InputError);  // rank outside the world
}

// ---- the file bootstrap, threads as ranks -------------------------------------------------------

struct TempDir {
  fs::path p = fs::temp_directory_path() / fmt::format("cr_nccl_{}_{}", ::getpid(), counter()++);
  TempDir() { fs::create_directories(p); }
  ~TempDir() { fs::remove_all(p); }
  static int& counter() {
    static int c = 0;
    return c;
  }
};

TEST(NcclFileBootstrap, RanksAgreeOnRankZerosIdAndTheFileGoes) {
  TempDir dir;
  // A file another job left behind, with a valid id of its own: must be neither read nor removed.
  std::ofstream(nccl_id_path(dir.p.string(), "slurm-41.0")) << "chainrule-ncclid 1 slurm-41.0 "
                                                            << std::string(256, 'a') << "\n";
  const int n = 4;
  std::vector<NcclId> got(n);
  std::unique_ptr<NcclIdFile> published;
  NcclId id{};
  for (size_t i = 0; i < id.size(); i++) id[i] = (char)(255 - i);
  std::vector<std::thread> ranks;
  for (int r = 1; r < n; r++)
    ranks.emplace_back([&, r] { got[r] = wait_for_nccl_id(dir.p.string(), "slurm-42.0", 5000ms, r); });
  std::this_thread::sleep_for(100ms);  // the others are polling before rank 0 writes
  published = std::make_unique<NcclIdFile>(dir.p.string(), "slurm-42.0", id);
  got[0] = id;
  for (auto& t : ranks) t.join();
  for (int r = 0; r < n; r++) EXPECT_EQ(got[r], id) << "rank " << r;
  EXPECT_TRUE(fs::exists(published->path()));
  published->remove();
  EXPECT_FALSE(fs::exists(nccl_id_path(dir.p.string(), "slurm-42.0")));
  EXPECT_TRUE(fs::exists(nccl_id_path(dir.p.string(), "slurm-41.0")));  // not ours: kept
  for (auto& e : fs::directory_iterator(dir.p))  // no temp file left behind
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(NcclFileBootstrap, StaleFileOfAnotherJobIsIgnoredAndTheTimeoutNamesTheFile) {
  TempDir dir;
  NcclId stale{};
  stale.fill('s');
  NcclIdFile old(dir.p.string(), "slurm-41.0", stale);  // another job's, still there
  const auto t0 = std::chrono::steady_clock::now();
  try {
    wait_for_nccl_id(dir.p.string(), "slurm-42.0", 300ms, 3);
    FAIL() << "read another job's id";
  } catch (const InputError& e) {
    const std::string m = e.message();
    EXPECT_NE(m.find(nccl_id_path(dir.p.string(), "slurm-42.0")), std::string::npos) << m;
    EXPECT_NE(m.find("rank 3 waited"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
}

// The same key (torchrun's address:port key is reused by the next job): a file written long
// before this rank started is a crashed job's leftover, never read; a fresh one is.
TEST(NcclFileBootstrap, StaleFileOfTheSameKeyIsIgnored) {
  TempDir dir;
  NcclId stale{}, fresh{};
  stale.fill('s');
  fresh.fill('f');
  NcclIdFile old(dir.p.string(), "torchrun-h_29500", stale);
  fs::last_write_time(old.path(), fs::file_time_type::clock::now() - std::chrono::minutes(5));
  EXPECT_THROW(wait_for_nccl_id(dir.p.string(), "torchrun-h_29500", 200ms, 1), InputError);
  NcclIdFile now(dir.p.string(), "torchrun-h_29500", fresh);  // rank 0 of the new job
  EXPECT_EQ(wait_for_nccl_id(dir.p.string(), "torchrun-h_29500", 2s, 1), fresh);
}

TEST(NcclFileBootstrap, IdOverAControlCommunicator) {
  auto api = std::make_shared<FakeNccl>();
  auto ctrl = make_single_rank_communicator();
  EXPECT_EQ(exchange_nccl_id(*ctrl, *api), api->id);
}

// ---- group splits of the grid -------------------------------------------------------------------

// Simulates ncclCommSplit over the world: the group of each rank is the ranks of its color in
// key order; it must be the RankGrid group, with group rank = the grid coordinate.
void check_splits(int world, int tp) {
  for (bool is_tp : {true, false}) {
    std::map<int, std::map<int, int>> groups;  // color -> key -> world rank
    for (int r = 0; r < world; r++) {
      const NcclSplit s = is_tp ? tp_split(RankGrid(world, tp, r)) : dp_split(RankGrid(world, tp, r));
      EXPECT_TRUE(groups[s.color].emplace(s.key, r).second) << "two ranks with one key";
    }
    for (int r = 0; r < world; r++) {
      const RankGrid g(world, tp, r);
      const NcclSplit s = is_tp ? tp_split(g) : dp_split(g);
      std::vector<int> members;
      for (auto& [key, rank] : groups[s.color]) members.push_back(rank);
      EXPECT_EQ(members, is_tp ? g.tp_group() : g.dp_group()) << g.describe();
      EXPECT_EQ(std::distance(groups[s.color].begin(), groups[s.color].find(s.key)),
                is_tp ? g.tp_rank() : g.dp_rank());
    }
  }
}

TEST(NcclSplit, ColorsAndKeysGiveTheRankGridGroups) {
  check_splits(16, 4);
  check_splits(8, 2);
  check_splits(6, 3);
  check_splits(4, 1);
  check_splits(4, 4);
  EXPECT_EQ(group_name("tp", RankGrid(16, 4, 6).tp_group()), "tp[4,5,6,7]");
}

TEST(NcclSplit, CommunicatorSplitsWithThoseArgumentsAndInheritsTheFaultPath) {
  auto api = std::make_shared<FakeNccl>();
  auto world = make_comm(api, 6, 16);
  const RankGrid g(16, 4, 6);
  auto tp = world->split(tp_split(g).color, tp_split(g).key, g.tp_rank(), g.tp(),
                         group_name("tp", g.tp_group()));
  ASSERT_EQ(api->splits.size(), 1u);
  EXPECT_EQ(api->splits[0], std::make_pair(1, 2));  // dp_rank 1, tp_rank 2
  EXPECT_EQ(tp->name(), "tp[4,5,6,7]");
  EXPECT_EQ(tp->rank(), 2);
  EXPECT_EQ(tp->size(), 4);
  api->mode = FakeNccl::Mode::Hang;
  tp->set_timeout(30ms);
  float x = 1;
  EXPECT_THROW(tp->all_reduce(&x, 1), Fault);  // the handler came along
}

// ---- init, stream ordering, staging -------------------------------------------------------------

TEST(NcclCommunicator, InitPollsUntilReadyAndTimesOutOrFailsWithAbort) {
  auto api = std::make_shared<FakeNccl>();
  api->init_pending_polls = 5;
  EXPECT_NO_THROW(make_comm(api));
  api->init_never_ready = true;
  try {
    NcclCommunicator::init(api, api->id, 0, 2, "world[0,1]", 50ms);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("world[0,1]"), std::string::npos);
    EXPECT_NE(e.message().find("did not finish initialising"), std::string::npos) << e.message();
  }
  EXPECT_EQ(api->aborts, 1);
}

// A non-blocking communicator may answer an enqueue with ncclInProgress: the collective is not
// on the stream yet, so its completion event must not be recorded until it is (else the event
// could fire before the collective runs and the compute stream read unreduced gradients).
TEST(NcclCommunicator, AnEnqueueInProgressSettlesBeforeItsEventIsRecorded) {
  auto api = std::make_shared<FakeNccl>();
  auto c = make_comm(api, 0, 2);
  api->enqueue_pending_polls = 2;
  float* buf = static_cast<float*>(api->device_alloc(sizeof(float)));
  c->all_reduce_async(buf, 1, ReduceOp::Sum, "grad.bucket 1/1")->wait();
  const std::vector<std::string> want = {"record on compute", "comm waits for compute",
                                         "enqueue on comm", "in progress", "in progress",
                                         "record on comm", "compute waits for comm"};
  EXPECT_EQ(api->trace, want);
  api->device_free(buf);
}

TEST(NcclCommunicator, DeviceCollectiveIsOrderedWithTheComputeStream) {
  auto api = std::make_shared<FakeNccl>();
  auto c = make_comm(api, 0, 4);
  float* buf = static_cast<float*>(api->device_alloc(3 * sizeof(float)));
  for (int i = 0; i < 3; i++) buf[i] = (float)i + 1;
  auto w = c->all_reduce_async(buf, 3, ReduceOp::Sum, "grad bucket 1/2");
  EXPECT_EQ(api->copies, 0);  // device memory: no staging
  EXPECT_EQ(api->calls.at(0).send, buf);
  w->wait();
  const std::vector<std::string> want = {"record on compute", "comm waits for compute",
                                         "enqueue on comm", "record on comm",
                                         "compute waits for comm"};
  EXPECT_EQ(api->trace, want);
  EXPECT_EQ(buf[2], 12.f);  // 4 ranks x 3
  api->device_free(buf);
}

TEST(NcclCommunicator, HostPointersAreStagedThroughDeviceScratch) {
  auto api = std::make_shared<FakeNccl>();
  auto c = make_comm(api, 1, 3);
  float host[2] = {2.f, 5.f};
  EXPECT_EQ(plan_staging(*api, host, host), NcclStaging::Host);
  c->all_reduce(host, 2, ReduceOp::Sum, "loss");
  EXPECT_EQ(api->copies, 2);  // host -> device, device -> host
  EXPECT_TRUE(api->is_device_pointer(api->calls.at(0).send));
  EXPECT_EQ(host[0], 6.f);
  EXPECT_EQ(host[1], 15.f);
  // reduce_scatter: this rank (1) gets its slice of every rank's send, summed.
  float send[6] = {1, 2, 3, 4, 5, 6}, recv[2] = {};
  c->reduce_scatter(send, recv, 2, ReduceOp::Sum);
  EXPECT_EQ(recv[0], 9.f);
  EXPECT_EQ(recv[1], 12.f);
  float gathered[3] = {};
  float one = 7;
  c->all_gather(&one, gathered, 1);
  EXPECT_EQ(gathered[2], 7.f);
  const auto bytes = c->all_gather_bytes("manifest", "ckpt");
  ASSERT_EQ(bytes.size(), 3u);
  EXPECT_EQ(bytes[2], "manifest");
  c->barrier("end");
  EXPECT_EQ(c->all_gather_bytes("", "empty"), std::vector<std::string>(3));
}

TEST(NcclCommunicator, IssuesOnItsOwnGpuFromAnyThread) {
  auto api = std::make_shared<FakeNccl>();
  api->device = 3;
  auto c = make_comm(api, 0, 2);
  std::thread([&] {
    api->device = 0;  // a fresh thread's current device
    float x = 1;
    c->all_reduce(&x, 1);
    EXPECT_EQ(api->device, 3);
  }).join();
}

TEST(NcclCommunicator, StagingDecision) {
  FakeNccl api;
  void* d = api.device_alloc(16);
  float h[4];
  EXPECT_EQ(plan_staging(api, d, d), NcclStaging::Device);
  EXPECT_EQ(plan_staging(api, (char*)d + 8, nullptr), NcclStaging::Device);
  EXPECT_EQ(plan_staging(api, h, h), NcclStaging::Host);
  EXPECT_EQ(plan_staging(api, nullptr, nullptr), NcclStaging::Device);
  EXPECT_THROW(plan_staging(api, h, d), Error);  // mixed: a caller's bug
  api.device_free(d);
  auto comm = make_comm(std::make_shared<FakeNccl>());
  EXPECT_TRUE(comm->device_memory());
}

// ---- the watchdog ---------------------------------------------------------------------------------

TEST(NcclWatchdog, AsyncErrorAbortsOnceAndReportsTheCollective) {
  auto api = std::make_shared<FakeNccl>();
  auto c = make_comm(api, 0, 2);
  api->mode = FakeNccl::Mode::AsyncError;
  float* buf = static_cast<float*>(api->device_alloc(8));
  try {  // reported while the collective is issued (settled), or at the latest by wait()
    c->broadcast_async(buf, 2, 0, "weights")->wait();
    FAIL() << "no fault reported";
  } catch (const Fault& f) {
    const std::string m = f.what();
    EXPECT_NE(m.find("collective #1 broadcast"), std::string::npos) << m;
    EXPECT_NE(m.find("tp[4,5] [weights]"), std::string::npos) << m;
    EXPECT_NE(m.find("ncclRemoteError"), std::string::npos) << m;
    EXPECT_NE(m.find("aborted"), std::string::npos) << m;
  }
  EXPECT_EQ(api->aborts, 1);
  api->device_free(buf);
}

TEST(NcclWatchdog, TimeoutAbortsExactlyOnceAndNeverHangs) {
  auto api = std::make_shared<FakeNccl>();
  {
    auto c = make_comm(api, 0, 2);
    c->set_timeout(50ms);
    api->mode = FakeNccl::Mode::Hang;
    float* buf = static_cast<float*>(api->device_alloc(8));
    auto w1 = c->all_reduce_async(buf, 2, ReduceOp::Max, "attn.proj.fwd");
    auto w2 = c->all_reduce_async(buf, 2, ReduceOp::Sum, "mlp.fwd");
    const auto t0 = std::chrono::steady_clock::now();
    try {
      w1->wait();
      FAIL();
    } catch (const Fault& f) {
      const std::string m = f.what();
      EXPECT_NE(m.find("collective #1 all_reduce(max) (8 bytes) on tp[4,5] [attn.proj.fwd]"),
                std::string::npos) << m;
      EXPECT_NE(m.find("did not complete within parallel.timeout_s = 0.05 s"), std::string::npos) << m;
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
    EXPECT_THROW(w2->wait(), Fault);  // the second pending collective: reported, not re-aborted
    EXPECT_THROW(c->all_reduce(buf, 2), Fault);  // nothing more runs on an aborted communicator
    EXPECT_EQ(api->aborts, 1);
    EXPECT_TRUE(c->aborted());
    api->device_free(buf);
  }
  EXPECT_EQ(api->destroys, 0);  // an aborted communicator is not destroyed again
}

TEST(NcclWatchdog, GpuErrorAbortsAndStagedCollectivesAreWatchedToo) {
  auto api = std::make_shared<FakeNccl>();
  auto c = make_comm(api, 0, 2);
  api->mode = FakeNccl::Mode::EventError;
  float loss = 1;
  try {
    c->all_reduce(&loss, 1, ReduceOp::Sum, "loss");
    FAIL();
  } catch (const Fault& f) {
    EXPECT_NE(std::string(f.what()).find("failed on the GPU: CUDA error 700"), std::string::npos);
  }
  EXPECT_EQ(api->aborts, 1);
}

TEST(NcclWatchdog, CompletesAndDestroysCleanly) {
  auto api = std::make_shared<FakeNccl>();
  {
    auto c = make_comm(api, 0, 2);
    float* buf = static_cast<float*>(api->device_alloc(4));
    *buf = 3;
    c->all_reduce(buf, 1, ReduceOp::Max);
    EXPECT_EQ(*buf, 3.f);
    EXPECT_EQ(c->bytes_issued(), 4u);
    api->device_free(buf);
  }
  EXPECT_EQ(api->aborts, 0);
  EXPECT_EQ(api->destroys, 1);
}

// ---- which communicator build_groups picks ------------------------------------------------------

TEST(NcclSelection, ChoiceOfGroupCommunicator) {
  EXPECT_TRUE(choose_group_communicator(false, true, true, 4, 4).nccl);
  EXPECT_EQ(choose_group_communicator(false, true, false, 4, 4).reason, "CPU backend");
  EXPECT_EQ(choose_group_communicator(false, false, true, 1, 1).reason, "this build has no NCCL");
  const auto shared = choose_group_communicator(false, true, true, 4, 1);
  EXPECT_FALSE(shared.nccl);
  EXPECT_NE(shared.reason.find("4 ranks share 1 GPU"), std::string::npos);
  EXPECT_TRUE(choose_group_communicator(true, true, true, 2, 8).nccl);
  for (auto [nccl, cuda] : {std::pair{false, true}, {true, false}, {false, false}}) {
    try {
      choose_group_communicator(true, nccl, cuda, 1, 1);
      FAIL();
    } catch (const InputError& e) {
      EXPECT_EQ(e.message(), "parallel.bootstrap file:DIR needs the NCCL communicator (a CUDA "
                             "build and train.device cuda)");
    }
  }
  EXPECT_THROW(choose_group_communicator(true, true, true, 2, 1), InputError);
}

TEST(NcclSelection, FileBootstrapOnThisBuildIsAnInputError) {
  if (make_nccl_api()) GTEST_SKIP() << "this build has NCCL";
  Config cfg;
  cfg.parallel.bootstrap = "file:/tmp";
  cfg.train.device = "cuda";
  ParallelContext ctx;
  EXPECT_THROW(init_processes(ctx, cfg), InputError);
}

}  // namespace
}  // namespace cr
