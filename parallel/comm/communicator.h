// Communicator: the collectives a rank group needs, behind one interface with two
// implementations today (single-rank, MPI) and NCCL later.
//
// Contract (every implementation, every caller):
//   1. Every rank of the group issues the same collectives, with the same sizes, in the same
//      order. Each collective gets the next sequence number, identical on every rank; that number
//      is how a timeout report names the collective that did not complete.
//   2. Async operations return a Work; wait(timeout) returns when the operation is complete.
//      Buffers must stay untouched until then.
//   3. A collective that does not complete within its timeout is a job-level failure: the rank
//      reports the sequence number, op, bytes and group (and the ranks still missing, if known)
//      and the fault handler ends the job. It never hangs. Tests replace the handler to observe
//      the report instead of aborting.
//   4. Flight recorder (flight_recorder.h): every implementation numbers a collective with
//      next() right before handing it to its library (that records "started"), calls
//      completed(info) once when the collective is known to be complete (from whichever thread
//      finds out: Work::wait, a watcher thread), and reports a timeout or error through fail().
//      Nothing else is needed: next/completed/fail forward to the recorder when one is attached.
//      A communicator made by splitting another adopts its settings (adopt_settings).
#pragma once

#include <atomic>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace cr {

enum class ReduceOp { Sum, Max };

struct CollectiveInfo {
  uint64_t seq = 0;
  std::string op;      // "all_reduce(sum)", "all_gather", ...
  size_t bytes = 0;
  std::string group;   // "tp[4,5,6,7]"
  std::string label;   // what the collective is for: "attn.proj.fwd", "grad bucket 3/12", ...
};

// What happens when a collective times out or fails. The default reports on stderr and aborts
// the whole job; it must not return normally (tests install one that throws).
using FaultHandler = std::function<void(const CollectiveInfo&, const std::string& why)>;

class FlightRecorder;

// Test-only fault injection (tests/dist/fault_hang.sh, desync.sh), read from the environment in
// one place (from_env) and handed to the communicators as an object (DESIGN convention 17).
// A hooked rank sleeps forever inside next(), before the collective is recorded or issued: to its
// peers and to the flight recorder it looks exactly like a rank stuck in compute.
//   CR_TEST_HANG_RANK=r  the world rank that hangs, and either
//   CR_TEST_HANG_AT=s    before collective #s of any of its communicators, or
//   CR_TEST_HANG_LABEL=p (CR_TEST_HANG_COUNT=k, default 1) before the k-th collective whose
//                        label starts with p ("attn.proj.fwd", "grad.bucket", "ckpt.save").
class TestFaultHooks {
 public:
  int hang_rank = -1;
  uint64_t hang_at = 0;  // 0: not by number
  std::string hang_label;  // "": not by label
  int hang_count = 1;

  // Null when no hook is set (the normal case).
  static std::shared_ptr<TestFaultHooks> from_env();
  // Counts label matches (shared by every communicator of the rank): call once per collective.
  bool should_hang(int world_rank, const CollectiveInfo& c);

 private:
  std::atomic<int> label_matches_{0};
};

class Work {
 public:
  virtual ~Work() = default;
  // Blocks until complete; on timeout calls the communicator's fault handler.
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The group's name for reports, e.g. "world[0..7]", "tp[4,5,6,7]".
  virtual std::string name() const = 0;
  // Whether the buffers of float collectives may be device memory, reduced in place (NCCL).
  // False: host memory only (MPI), so callers stage device buffers through the host.
  virtual bool device_memory() const { return false; }

  // `label` says what each collective is for ("attn.proj.fwd", "grad bucket 3/12"): reports and
  // the flight recorder name it. Never null ("" when there is nothing to say).
  virtual std::unique_ptr<Work> all_reduce_async(float* buf, size_t n, ReduceOp op,
                                                 const char* label) = 0;
  // recv[n] = op over ranks of send[rank*n : (rank+1)*n]   (send holds size()*n floats).
  // In place when recv == send + rank()*n: the result lands in this rank's part of send (the
  // other parts are left undefined).
  virtual std::unique_ptr<Work> reduce_scatter_async(const float* send, float* recv, size_t n,
                                                     ReduceOp op, const char* label) = 0;
  // recv[size()*n] = concatenation of every rank's send[n], in rank order. In place when
  // send == recv + rank()*n.
  virtual std::unique_ptr<Work> all_gather_async(const float* send, float* recv, size_t n,
                                                 const char* label) = 0;
  virtual std::unique_ptr<Work> broadcast_async(float* buf, size_t n, int root,
                                                const char* label) = 0;
  virtual void barrier(const char* label = "") = 0;
  // Control-plane gather of variable-length byte strings (checkpoint metadata, manifests): every
  // rank receives every rank's bytes, in rank order. Blocking, with the same timeout contract.
  virtual std::vector<std::string> all_gather_bytes(const std::string& mine,
                                                    const char* label = "") = 0;

  void all_reduce(float* buf, size_t n, ReduceOp op = ReduceOp::Sum, const char* label = "") {
    all_reduce_async(buf, n, op, label)->wait();
  }
  void reduce_scatter(const float* send, float* recv, size_t n, ReduceOp op = ReduceOp::Sum,
                      const char* label = "") {
    reduce_scatter_async(send, recv, n, op, label)->wait();
  }
  void all_gather(const float* send, float* recv, size_t n, const char* label = "") {
    all_gather_async(send, recv, n, label)->wait();
  }
  void broadcast(float* buf, size_t n, int root, const char* label = "") {
    broadcast_async(buf, n, root, label)->wait();
  }

  void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  void set_fault_handler(FaultHandler h) { fault_ = std::move(h); }
  // Every collective of this communicator is recorded there (null: none). Shared by the
  // communicators of one rank; see flight_recorder.h.
  void set_recorder(std::shared_ptr<FlightRecorder> r) { recorder_ = std::move(r); }
  const std::shared_ptr<FlightRecorder>& recorder() const { return recorder_; }
  void set_test_hooks(std::shared_ptr<TestFaultHooks> h) { hooks_ = std::move(h); }
  // What a communicator split from `parent` keeps: timeout, fault handler, recorder, test hooks.
  void adopt_settings(const Communicator& parent);
  // Bytes moved by collectives issued so far (payload per rank), for the per-step report.
  uint64_t bytes_issued() const { return bytes_issued_; }

 protected:
  // Numbers the next collective and records it as started (contract 4); call it right before
  // handing the collective to the library. A test hook (TestFaultHooks) may stop here forever.
  CollectiveInfo next(const char* op, size_t bytes, const char* label);
  // Records that `c` completed (contract 4). Cheap; safe from any thread.
  void completed(const CollectiveInfo& c) const;
  // Reports a failed collective and ends the job (through the fault handler when one is set).
  // With a recorder: records the failure, writes this rank's flight record and waits (bounded)
  // for the job's desync diagnosis before taking the job down.
  [[noreturn]] void fail(const CollectiveInfo& c, const std::string& why) const;
  // Takes every rank of the job down; never returns.
  [[noreturn]] virtual void abort_job() const;

  std::chrono::milliseconds timeout_{std::chrono::seconds(300)};
  FaultHandler fault_;

 private:
  // Atomic: with parallel.overlap a communication thread issues collectives too.
  std::atomic<uint64_t> seq_{0};
  std::atomic<uint64_t> bytes_issued_{0};
  std::shared_ptr<FlightRecorder> recorder_;
  std::shared_ptr<TestFaultHooks> hooks_;
};

// One rank, no peers: every collective is a copy or nothing. Lets the same code run anywhere.
std::unique_ptr<Communicator> make_single_rank_communicator();

}  // namespace cr
