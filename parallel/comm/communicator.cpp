// What every Communicator shares: numbering collectives, the test-only hang hook, the hand-off to
// the flight recorder (started / completed / failed) and the one-line failure report; plus the
// single-rank communicator. Sits between the model / gradient sync / checkpointer, which issue
// collectives, and the MPI or NCCL library that runs them.
#include "parallel/comm/communicator.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "core/common/error.h"
#include "core/common/log.h"
#include "parallel/comm/flight_recorder.h"

namespace cr {

std::shared_ptr<TestFaultHooks> TestFaultHooks::from_env() {
  const char* rank = std::getenv("CR_TEST_HANG_RANK");
  const char* at = std::getenv("CR_TEST_HANG_AT");
  const char* label = std::getenv("CR_TEST_HANG_LABEL");
  const char* count = std::getenv("CR_TEST_HANG_COUNT");
  if (!rank || (!at && !label)) return nullptr;
  auto h = std::make_shared<TestFaultHooks>();
  h->hang_rank = std::atoi(rank);
  if (at) h->hang_at = std::strtoull(at, nullptr, 10);
  if (label) h->hang_label = label;
  if (count) h->hang_count = std::max(1, std::atoi(count));
  return h;
}

bool TestFaultHooks::should_hang(int world_rank, const CollectiveInfo& c) {
  if (world_rank != hang_rank) return false;
  if (hang_at > 0 && c.seq == hang_at) return true;
  return !hang_label.empty() && c.label.starts_with(hang_label) &&
         ++label_matches_ == hang_count;
}

void Communicator::adopt_settings(const Communicator& parent) {
  timeout_ = parent.timeout_;
  fault_ = parent.fault_;
  recorder_ = parent.recorder_;
  hooks_ = parent.hooks_;
}

CollectiveInfo Communicator::next(const char* op, size_t bytes, const char* label) {
  bytes_issued_ += bytes;
  CollectiveInfo c{++seq_, op, bytes, name(), label};
  if (hooks_ && hooks_->should_hang(process_identity().rank, c)) {
    log::warn("test fault hook: hanging before collective #{} {} on {} ({})", c.seq, op, c.group,
              c.label);
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  if (recorder_) recorder_->started(c);
  return c;
}

void Communicator::completed(const CollectiveInfo& c) const {
  if (recorder_) recorder_->completed(c);
}

void Communicator::fail(const CollectiveInfo& c, const std::string& why) const {
  if (recorder_) recorder_->failed(c, why);
  if (fault_) fault_(c, why);  // tests: throws
  const auto& id = process_identity();
  const std::string label = c.label.empty() ? "" : fmt::format(" [{}]", c.label);
  const std::string record =
      recorder_ ? fmt::format("; flight record: {}", recorder_->path()) : std::string();
  // Which of the group's other hosts still answer (bounded: half the timeout, 0.2 to 1.5 s), so
  // that a cut link is named here and in the diagnosis.
  const auto budget = std::clamp(timeout_ / 2, std::chrono::milliseconds(200),
                                 FlightRecorder::kMaxProbe);
  const std::string unreachable = recorder_ ? recorder_->probe_peers(c.group, budget) : "";
  const std::string reach = unreachable.empty() ? "" : "; unreachable: " + unreachable;
  fmt::print(stderr, "[rank {}] error: collective #{} {} ({} bytes) on group {} {}{}{}{}; aborting the job\n",
             id.rank, c.seq, c.op, c.bytes, c.group, why, label, reach, record);
  std::fflush(stderr);
  // Dump, and let rank 0 print the job's diagnosis before any rank aborts (bounded wait).
  if (recorder_)
    recorder_->settle_failure(fmt::format("collective #{} on {} ({}) {}{}", c.seq, c.group,
                                          c.label, why, reach),
                              timeout_);
  abort_job();
  std::abort();  // abort_job() never returns; this tells the compiler so
}

void Communicator::abort_job() const { std::abort(); }

namespace {

class DoneWork final : public Work {
 public:
  void wait() override {}
};

class SingleRankCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "single[0]"; }
  std::unique_ptr<Work> all_reduce_async(float*, size_t n, ReduceOp, const char* label) override {
    completed(next("all_reduce", n * sizeof(float), label));
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> reduce_scatter_async(const float* send, float* recv, size_t n, ReduceOp,
                                             const char* label) override {
    completed(next("reduce_scatter", n * sizeof(float), label));
    if (send != recv) std::memmove(recv, send, n * sizeof(float));
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> all_gather_async(const float* send, float* recv, size_t n,
                                         const char* label) override {
    completed(next("all_gather", n * sizeof(float), label));
    if (send != recv) std::memmove(recv, send, n * sizeof(float));
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> broadcast_async(float*, size_t n, int, const char* label) override {
    completed(next("broadcast", n * sizeof(float), label));
    return std::make_unique<DoneWork>();
  }
  void barrier(const char*) override {}
  std::vector<std::string> all_gather_bytes(const std::string& mine, const char* label) override {
    completed(next("all_gather_bytes", mine.size(), label));
    return {mine};
  }
};

}  // namespace

std::unique_ptr<Communicator> make_single_rank_communicator() {
  return std::make_unique<SingleRankCommunicator>();
}

}  // namespace cr
