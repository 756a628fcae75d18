#include "parallel/comm/communicator.h"

#include <cstdlib>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "core/common/error.h"
#include "core/common/log.h"

namespace cr {

CollectiveInfo Communicator::next(const char* op, size_t bytes, const char* label) {
  bytes_issued_ += bytes;
  CollectiveInfo c{++seq_, op, bytes, name(), label};
  static const char* hang_rank = std::getenv("CR_TEST_HANG_RANK");
  static const char* hang_at = std::getenv("CR_TEST_HANG_AT");
  if (hang_rank && hang_at && std::atoi(hang_rank) == process_identity().rank &&
      std::strtoull(hang_at, nullptr, 10) == c.seq) {
    log::warn("test fault hook: hanging before collective #{} {} on {}", c.seq, op, c.group);
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  return c;
}

void Communicator::fail(const CollectiveInfo& c, const std::string& why) const {
  if (fault_) fault_(c, why);  // tests: throws
  const auto& id = process_identity();
  fmt::print(stderr, "[rank {}] error: collective #{} {} ({} bytes) on group {} {}; aborting the job\n",
             id.rank, c.seq, c.op, c.bytes, c.group, why);
  std::fflush(stderr);
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
    next("all_reduce", n * sizeof(float), label);
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> reduce_scatter_async(const float* send, float* recv, size_t n, ReduceOp,
                                             const char* label) override {
    next("reduce_scatter", n * sizeof(float), label);
    if (send != recv) std::memmove(recv, send, n * sizeof(float));
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> all_gather_async(const float* send, float* recv, size_t n,
                                         const char* label) override {
    next("all_gather", n * sizeof(float), label);
    if (send != recv) std::memmove(recv, send, n * sizeof(float));
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> broadcast_async(float*, size_t n, int, const char* label) override {
    next("broadcast", n * sizeof(float), label);
    return std::make_unique<DoneWork>();
  }
  void barrier(const char*) override {}
  std::vector<std::string> all_gather_bytes(const std::string& mine, const char* label) override {
    next("all_gather_bytes", mine.size(), label);
    return {mine};
  }
};

}  // namespace

std::unique_ptr<Communicator> make_single_rank_communicator() {
  return std::make_unique<SingleRankCommunicator>();
}

}  // namespace cr
