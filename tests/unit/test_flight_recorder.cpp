// The flight recorder and the desync diagnosis, without MPI: the diagnosis on hand-built records
// of a tp2 x dp2 job (groups tp[0,1], tp[2,3], dp[0,2], dp[1,3], world[0,1,2,3]) for each way a
// job hangs, then the recorder itself (ring, JSON round trip, threads), the watchdog and the
// test hooks. tests/dist/desync.sh runs the same cases end to end on 4 MPI ranks.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "parallel/comm/flight_recorder.h"
#include "test_util.h"

namespace cr {
namespace {

const std::string kWorld = "world[0,1,2,3]";

// One rank's record, written in program order: each call is the rank's next collective.
class Sim {
 public:
  Sim(int rank, int world = 4, std::string reason = "collective timed out") {
    d_.rank = rank;
    d_.world_size = world;
    d_.reason = std::move(reason);
  }
  Sim& done(const std::string& g, uint64_t seq, const std::string& label,
            const char* thread = "main") {
    return add(g, seq, label, RecordState::Completed, thread);
  }
  Sim& wait(const std::string& g, uint64_t seq, const std::string& label,
            const char* thread = "main") {
    return add(g, seq, label, RecordState::Started, thread);
  }
  Sim& timed_out(const std::string& g, uint64_t seq, const std::string& label) {
    return add(g, seq, label, RecordState::Failed, "main");
  }
  // Collectives first..last on g, all completed, labelled by `labels` in turn.
  Sim& done_range(const std::string& g, uint64_t first, uint64_t last,
                  const std::vector<std::string>& labels) {
    for (uint64_t s = first; s <= last; s++) done(g, s, labels[(s - 1) % labels.size()]);
    return *this;
  }
  RankDump get() {
    d_.dumped_at_ms = t_ + 5000;
    return d_;
  }

 private:
  Sim& add(const std::string& g, uint64_t seq, const std::string& label, RecordState st,
           const char* thread) {
    t_ += 1;
    FlightRecord r{++d_.collectives_started, seq, "all_reduce(sum)", g, label, 64, st, t_,
                   st == RecordState::Started ? 0 : t_ + 0.5, thread};
    d_.records.push_back(r);
    auto& p = d_.groups[g];
    p.last_started = std::max(p.last_started, seq);
    if (st == RecordState::Completed) p.last_completed = std::max(p.last_completed, seq);
    return *this;
  }
  RankDump d_;
  double t_ = 1e6;
};

// One step's TP collectives, in order: what a 1-layer model issues forward then backward.
const std::vector<std::string> kTpStep = {"attn.proj.fwd", "mlp.proj.fwd", "loss.sums",
                                          "lm_head.bwd", "mlp.fc.bwd", "attn.qkv.bwd"};

// Rank 3 hangs before the first TP collective of step 2 (tp[2,3] #7, attn.proj.fwd): its TP peer
// waits on it; ranks 0 and 1 finished the step and wait in the DP reduction on ranks 2 and 3.
std::vector<RankDump> tp_forward_hang() {
  std::vector<RankDump> out;
  for (int r : {0, 1}) {
    Sim s(r);
    s.done_range("tp[0,1]", 1, 6, kTpStep).done(r == 0 ? "dp[0,2]" : "dp[1,3]", 1, "grad.bucket");
    s.done_range("tp[0,1]", 7, 12, kTpStep).timed_out(r == 0 ? "dp[0,2]" : "dp[1,3]", 2, "grad.bucket");
    out.push_back(s.get());
  }
  Sim r2(2);
  r2.done_range("tp[2,3]", 1, 6, kTpStep).done("dp[0,2]", 1, "grad.bucket").timed_out("tp[2,3]", 7, "attn.proj.fwd");
  out.push_back(r2.get());
  Sim r3(3, 4, "no progress for 3.0 s (last: completed collective #1 (dp[1,3] grad.bucket))");
  r3.done_range("tp[2,3]", 1, 6, kTpStep).done("dp[1,3]", 1, "grad.bucket");
  out.push_back(r3.get());
  return out;
}

TEST(Desync, HangMidForwardOnATensorParallelCollective) {
  const auto dumps = tp_forward_hang();
  const Diagnosis d = diagnose(dumps, 4);
  EXPECT_EQ(d.culprits, std::vector<int>{3});
  EXPECT_EQ(d.line,
            "desync: rank 3 completed collective #6 (tp[2,3] attn.qkv.bwd) and never started #7 "
            "(tp[2,3] attn.proj.fwd), which ranks 0, 1 and 2 are waiting on");
}

TEST(Desync, HangInTheDataParallelReductionOnTheCommThread) {
  // Rank 3 reduced bucket 1/2 on its communication thread and never issued 2/2. Rank 1 waits on
  // it there; ranks 0 and 2 finished the reduction and wait in the gradient norm's TP reduction
  // (rank 2 on rank 3 directly, rank 0 on rank 1). Bucket 2/2 comes first in the program.
  std::vector<RankDump> dumps;
  for (int r : {0, 2}) {
    Sim s(r);
    const std::string tp = r == 0 ? "tp[0,1]" : "tp[2,3]";
    s.done_range(tp, 1, 6, kTpStep)
        .done("dp[0,2]", 1, "grad.bucket 1/2", "comm")
        .done("dp[0,2]", 2, "grad.bucket 2/2", "comm")
        .done("dp[0,2]", 3, "loss.mean")
        .timed_out(tp, 7, "grad.norm");
    dumps.push_back(s.get());
  }
  Sim r1(1);
  r1.done_range("tp[0,1]", 1, 6, kTpStep)
      .done("dp[1,3]", 1, "grad.bucket 1/2", "comm")
      .wait("dp[1,3]", 2, "grad.bucket 2/2", "comm");
  dumps.push_back(r1.get());
  Sim r3(3, 4, "no progress for 3.0 s (last: completed collective #1 (dp[1,3] grad.bucket 1/2))");
  r3.done_range("tp[2,3]", 1, 6, kTpStep).done("dp[1,3]", 1, "grad.bucket 1/2", "comm");
  dumps.push_back(r3.get());

  const Diagnosis d = diagnose(dumps, 4);
  EXPECT_EQ(d.culprits, std::vector<int>{3});
  EXPECT_EQ(d.line,
            "desync: rank 3 completed collective #1 (dp[1,3] grad.bucket 1/2) and never started #2 "
            "(dp[1,3] grad.bucket 2/2), which ranks 0, 1 and 2 are waiting on");
  const std::string table = rank_table(dumps, 4);
  EXPECT_NE(table.find("comm thread"), std::string::npos) << table;
  EXPECT_NE(table.find("stalled"), std::string::npos) << table;
  EXPECT_NE(table.find("timed out"), std::string::npos) << table;
}

TEST(Desync, HangBeforeACheckpointCollectiveOnTheWorldGroup) {
  std::vector<RankDump> dumps;
  for (int r = 0; r < 4; r++) {
    Sim s(r, 4, r == 3 ? "no progress for 3.0 s" : "collective timed out");
    s.done_range(kWorld, 1, 4, {"stop_signal"});
    if (r != 3) s.timed_out(kWorld, 5, "ckpt.save.boxes");
    dumps.push_back(s.get());
  }
  const Diagnosis d = diagnose(dumps, 4);
  EXPECT_EQ(d.culprits, std::vector<int>{3});
  EXPECT_EQ(d.line,
            "desync: rank 3 completed collective #4 (world[0,1,2,3] stop_signal) and never "
            "started #5 (world[0,1,2,3] ckpt.save.boxes), which ranks 0, 1 and 2 are waiting on");
}

TEST(Desync, ADeadRankWithNoRecordIsNamed) {
  auto dumps = tp_forward_hang();
  dumps.pop_back();  // rank 3 never wrote
  const Diagnosis d = diagnose(dumps, 4);
  EXPECT_EQ(d.culprits, std::vector<int>{3});
  EXPECT_EQ(d.line,
            "desync: rank 3 left no flight record (dead or stuck before it could write); ranks "
            "0, 1 and 2 are waiting on it, first in collective #7 (tp[2,3] attn.proj.fwd)");
  EXPECT_NE(rank_table(dumps, 4).find("missing"), std::string::npos);
}

TEST(Desync, EveryoneWaitingOnTheSameCollectiveIsANetworkProblem) {
  std::vector<RankDump> dumps;
  for (int r : {0, 1}) {
    Sim s(r, 2);
    s.done_range("tp[0,1]", 1, 6, kTpStep).timed_out("tp[0,1]", 7, "attn.proj.fwd");
    dumps.push_back(s.get());
  }
  const Diagnosis d = diagnose(dumps, 2);
  EXPECT_TRUE(d.culprits.empty());
  EXPECT_EQ(d.line,
            "desync: all ranks of tp[0,1] started #7 (attn.proj.fwd); none completed: a network "
            "or library problem, not a rank falling behind");
}

TEST(Desync, RanksWaitingOnEachOtherAreACircularWait) {
  Sim r0(0, 2), r1(1, 2);
  r0.done("dp[0,1]", 1, "a").timed_out("dp[0,1]", 2, "grad.bucket");
  r1.done("dp[0,1]", 1, "a").done("tp[0,1]", 1, "x").timed_out("tp[0,1]", 2, "attn.proj.fwd");
  r0.done("tp[0,1]", 1, "x");
  const Diagnosis d = diagnose({r0.get(), r1.get()}, 2);
  EXPECT_TRUE(d.culprits.empty());
  EXPECT_TRUE(d.line.starts_with("desync: circular wait: rank 0 waits on rank 1 in #2")) << d.line;
}

TEST(Desync, NothingPendingNamesTheStalledRank) {
  Sim r0(0, 2, "no progress for 30.0 s (last: completed collective #3 (tp[0,1] loss.sums))");
  r0.done_range("tp[0,1]", 1, 3, kTpStep);
  const Diagnosis d = diagnose({r0.get()}, 2);
  EXPECT_NE(d.line.find("rank 0: no progress for 30.0 s"), std::string::npos) << d.line;
  EXPECT_NE(d.line.find("rank 1 left no flight record"), std::string::npos) << d.line;
}

TEST(Desync, GroupMembersComeFromTheGroupName) {
  EXPECT_EQ(group_members("tp[4,5,6,7]"), (std::vector<int>{4, 5, 6, 7}));
  EXPECT_EQ(group_members("single[0]"), std::vector<int>{0});
  EXPECT_TRUE(group_members("weird").empty());
  EXPECT_TRUE(group_members("x[a,b]").empty());
}

// ---- the recorder -----------------------------------------------------------------------------

CollectiveInfo info(uint64_t seq, const std::string& group, const std::string& label) {
  return {seq, "all_reduce(sum)", 256, group, label};
}

TEST(FlightRecorder, KeepsTheLastNCollectivesAndRoundTripsThroughJson) {
  testing::TempDir tmp;
  FlightRecorder rec(tmp.file("flight"), 4, {2, 4, "host-a", 1234});
  rec.add_group("dp[0,2]");
  for (uint64_t s = 1; s <= 10; s++) {
    rec.started(info(s, "tp[2,3]", "attn.proj.fwd"));
    if (s < 10) rec.completed(info(s, "tp[2,3]", "attn.proj.fwd"));
  }
  rec.failed(info(10, "tp[2,3]", "attn.proj.fwd"), "did not complete");
  ASSERT_TRUE(rec.dump("collective #10 on tp[2,3] timed out"));

  const auto dumps = read_flight_dir(tmp.file("flight"));
  ASSERT_EQ(dumps.size(), 1u);
  const RankDump& d = dumps[0];
  EXPECT_EQ(d.rank, 2);
  EXPECT_EQ(d.world_size, 4);
  EXPECT_EQ(d.host, "host-a");
  EXPECT_EQ(d.pid, 1234);
  EXPECT_EQ(d.reason, "collective #10 on tp[2,3] timed out");
  EXPECT_EQ(d.collectives_started, 10u);
  ASSERT_EQ(d.records.size(), 4u);  // the ring kept the newest 4, oldest first
  EXPECT_EQ(d.records.front().seq, 7u);
  EXPECT_EQ(d.records.back().seq, 10u);
  EXPECT_EQ(d.records.back().state, RecordState::Failed);
  EXPECT_EQ(d.records.front().state, RecordState::Completed);
  EXPECT_EQ(d.records.front().thread, "main");
  EXPECT_GE(d.records.front().end_ms, d.records.front().start_ms);
  EXPECT_EQ(d.groups.at("tp[2,3]").last_started, 10u);
  EXPECT_EQ(d.groups.at("tp[2,3]").last_completed, 9u);
  EXPECT_EQ(d.groups.count("dp[0,2]"), 1u);  // listed though it never ran a collective
  EXPECT_EQ(d.last_progress, "started collective #10 (tp[2,3] attn.proj.fwd)");
  EXPECT_FALSE(std::filesystem::exists(tmp.file("flight/rank-2.json.tmp")));
}

TEST(FlightRecorder, RecordsTwoThreadsAndNamesTheCommThread) {
  testing::TempDir tmp;
  FlightRecorder rec(tmp.file("flight"), 4096, {0, 2, "h", 1});
  std::thread comm([&] {
    for (uint64_t s = 1; s <= 1000; s++) {
      rec.started(info(s, "dp[0,1]", "grad.bucket"));
      rec.completed(info(s, "dp[0,1]", "grad.bucket"));
    }
  });
  for (uint64_t s = 1; s <= 1000; s++) {
    rec.started(info(s, "tp[0,1]", "mlp.proj.fwd"));
    rec.completed(info(s, "tp[0,1]", "mlp.proj.fwd"));
  }
  comm.join();
  const RankDump d = rec.snapshot("test");
  ASSERT_EQ(d.records.size(), 2000u);
  for (const auto& r : d.records) {
    EXPECT_EQ(r.state, RecordState::Completed);
    EXPECT_EQ(r.thread, r.group == "dp[0,1]" ? "comm" : "main");
  }
  EXPECT_EQ(d.groups.at("dp[0,1]").last_completed, 1000u);
}

TEST(FlightRecorder, ABadFileIsNamed) {
  testing::TempDir tmp;
  std::filesystem::create_directories(tmp.file("flight"));
  std::ofstream(tmp.file("flight/rank-1.json")) << "{\"rank\": 1";
  const std::string msg = testing::input_error_of([&] { read_flight_dir(tmp.file("flight")); });
  EXPECT_NE(msg.find("rank-1.json"), std::string::npos) << msg;
  EXPECT_NE(testing::input_error_of([&] { read_flight_dir(tmp.file("nowhere")); }).find("nowhere"),
            std::string::npos);
}

TEST(FlightRecorder, RemovesOnlyItsOwnStaleFiles) {
  testing::TempDir tmp;
  const auto dir = tmp.file("flight");
  std::filesystem::create_directories(dir);
  for (const char* f : {"rank-0.json", "rank-12.json", "diagnosis.txt", "notes.txt", "rank-x.json"})
    std::ofstream(dir + "/" + f) << "x";
  FlightRecorder(dir, 8, {0, 1, "h", 1}).remove_stale_files();
  EXPECT_FALSE(std::filesystem::exists(dir + "/rank-0.json"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/rank-12.json"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/diagnosis.txt"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/notes.txt"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/rank-x.json"));
}

// ---- the watchdog -----------------------------------------------------------------------------

bool appears(const std::string& path, std::chrono::milliseconds within) {
  const auto end = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < end) {
    if (std::filesystem::exists(path)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return std::filesystem::exists(path);
}

TEST(Watchdog, DumpsOncePerStallAndNeverWhileProgressing) {
  testing::TempDir tmp;
  auto rec = std::make_shared<FlightRecorder>(tmp.file("flight"), 16, FlightRecorder::Identity{1, 2, "h", 1});
  const std::string file = tmp.file("flight/rank-1.json");
  Watchdog dog(rec, std::chrono::milliseconds(150));
  for (uint64_t s = 1; s <= 20; s++) {  // 400 ms of steady progress: no dump
    rec->started(info(s, "tp[0,1]", "attn.proj.fwd"));
    rec->completed(info(s, "tp[0,1]", "attn.proj.fwd"));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_FALSE(std::filesystem::exists(file));
  ASSERT_TRUE(appears(file, std::chrono::milliseconds(2000)));  // then a stall
  const auto d = read_flight_dir(tmp.file("flight"));
  ASSERT_EQ(d.size(), 1u);
  EXPECT_TRUE(d[0].reason.starts_with("no progress for")) << d[0].reason;
  EXPECT_NE(d[0].reason.find("completed collective #20"), std::string::npos) << d[0].reason;
  std::filesystem::remove(file);
  EXPECT_FALSE(appears(file, std::chrono::milliseconds(500)));  // once per stall
  rec->note_progress("checkpoint: writing shards");
  ASSERT_TRUE(appears(file, std::chrono::milliseconds(2000)));  // a new stall
}

TEST(Watchdog, LeavesAPendingCollectiveToItsOwnDeadline) {
  testing::TempDir tmp;
  auto rec = std::make_shared<FlightRecorder>(tmp.file("flight"), 16, FlightRecorder::Identity{0, 2, "h", 1});
  Watchdog dog(rec, std::chrono::milliseconds(100));
  rec->started(info(1, "tp[0,1]", "attn.proj.fwd"));  // waiting inside a collective
  EXPECT_FALSE(appears(tmp.file("flight/rank-0.json"), std::chrono::milliseconds(800)));
}

// ---- the test hooks ---------------------------------------------------------------------------

TEST(TestFaultHooks, HangAtTheKthCollectiveWithALabelPrefix) {
  TestFaultHooks h;
  h.hang_rank = 3;
  h.hang_label = "grad.bucket";
  h.hang_count = 2;
  EXPECT_FALSE(h.should_hang(2, info(1, "dp[0,2]", "grad.bucket 1/2")));  // another rank
  EXPECT_FALSE(h.should_hang(3, info(1, "dp[1,3]", "grad.bucket 1/2")));  // the 1st match
  EXPECT_FALSE(h.should_hang(3, info(2, "dp[1,3]", "loss.mean")));
  EXPECT_TRUE(h.should_hang(3, info(3, "dp[1,3]", "grad.bucket 2/2")));  // the 2nd
  TestFaultHooks at;
  at.hang_rank = 1;
  at.hang_at = 5;
  EXPECT_FALSE(at.should_hang(1, info(4, "tp[0,1]", "")));
  EXPECT_TRUE(at.should_hang(1, info(5, "tp[0,1]", "")));
}

}  // namespace
}  // namespace cr
