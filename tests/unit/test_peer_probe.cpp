// Peer probes (which hosts of a job still answer), the rank map of the start-up log, and the
// desync diagnosis naming unreachable hosts. tests/multinode/mpirun.sh cuts a real link between
// two network namespaces and checks the same messages end to end.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <fmt/format.h>

#include "parallel/comm/flight_recorder.h"
#include "parallel/comm/peer_probe.h"
#include "parallel/comm/startup_guard.h"

namespace cr {
namespace {

// A TCP socket on a loopback address (any of 127.0.0.0/8 reaches this machine) with a
// kernel-chosen port: listening, closed again, or silent (a listener whose accept queue is full:
// Linux drops further SYNs without an answer, as a host behind a cut link gives none).
struct LocalPort {
  enum Mode { Listening, Closed, Silent };
  int fd = -1, port = 0;
  std::vector<int> fillers;
  LocalPort(Mode mode, const char* addr, int want_port = 0) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)want_port);
    ::inet_pton(AF_INET, addr, &a.sin_addr);
    socklen_t len = sizeof a;
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
    port = ntohs(a.sin_port);
    if (mode == Closed) {
      ::close(fd);  // nothing listens there now: a connection is refused
      fd = -1;
      return;
    }
    EXPECT_EQ(::listen(fd, mode == Silent ? 0 : 4), 0);
    for (int i = 0; mode == Silent && i < 2; i++) {  // fill the queue (backlog 0 holds one)
      const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a);
      fillers.push_back(c);
    }
    if (mode == Silent) ::usleep(20000);
  }
  ~LocalPort() {
    for (int c : fillers) ::close(c);
    if (fd >= 0) ::close(fd);
  }
};

TEST(RankMap, TensorParallelGroupsInsideHostsDataParallelAcross) {
  const RankMap m = describe_rank_map({"n1", "n1", "n2", "n2"}, 2);
  EXPECT_EQ(m.line, "rank map: n1 [0-1] n2 [2-3]; every tp group within one host; dp groups across 2 hosts");
  EXPECT_TRUE(m.warnings.empty());
  EXPECT_EQ(describe_rank_map({"a", "a", "a", "a"}, 2).line,
            "rank map: a [0-3]; every tp group within one host; dp groups within one host");
  EXPECT_EQ(describe_rank_map({"a", "b"}, 1).line, "rank map: a [0] b [1]; dp groups across 2 hosts");
}

TEST(RankMap, ATensorParallelGroupAcrossHostsIsWarnedAbout) {
  // Ranks dealt round-robin over the hosts (mpirun --map-by node): every TP pair crosses.
  const RankMap m = describe_rank_map({"n1", "n2", "n1", "n2"}, 2);
  EXPECT_EQ(m.line, "rank map: n1 [0,2] n2 [1,3]; 2 of 2 tp groups span hosts; dp groups within one host");
  ASSERT_EQ(m.warnings.size(), 2u);
  EXPECT_NE(m.warnings[0].find("tensor-parallel group [0-1] spans hosts n1, n2"), std::string::npos);
  EXPECT_NE(m.warnings[1].find("[2-3]"), std::string::npos);
}

TEST(RankMap, RanksCollapseIntoRuns) {
  EXPECT_EQ(rank_ranges({7, 0, 1, 2, 5, 8}), "0-2,5,7-8");
  EXPECT_EQ(rank_ranges({3}), "3");
  EXPECT_EQ(rank_ranges({}), "");
}

TEST(PeerProbe, AnswersRefusalsAndSilenceAreToldApart) {
  // Each host on its own loopback address, as hosts have their own addresses.
  LocalPort up(LocalPort::Listening, "127.0.0.2"), gone(LocalPort::Closed, "127.0.0.3"),
      silent(LocalPort::Silent, "127.0.0.4");
  auto d = PeerDirectory::from_endpoints(
      0, {{"self", {"127.0.0.1"}, 1}, {"self", {"127.0.0.1"}, 1},
          {"up", {"127.0.0.2"}, up.port}, {"gone", {"127.0.0.3"}, gone.port},
          {"cut", {"127.0.0.4"}, silent.port}, {"up", {"127.0.0.2"}, up.port}});
  const auto t0 = std::chrono::steady_clock::now();
  const auto reach = d->probe({0, 1, 2, 3, 4, 5}, std::chrono::milliseconds(300));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(secs, 1.0) << "the probes run at once, bounded by the budget";
  ASSERT_EQ(reach.size(), 3u) << "one entry per other host; rank 1 shares this rank's host";
  EXPECT_EQ(reach[0].host, "up");
  EXPECT_TRUE(reach[0].reachable);
  EXPECT_FALSE(reach[0].partial);
  EXPECT_EQ(reach[0].ranks, (std::vector<int>{2, 5}));
  EXPECT_NE(reach[0].detail.find("answered"), std::string::npos) << reach[0].detail;
  EXPECT_EQ(reach[1].host, "gone");
  EXPECT_TRUE(reach[1].reachable) << "a refusal is an answer: the host is up";
  EXPECT_NE(reach[1].detail.find("rank 3's process is gone"), std::string::npos) << reach[1].detail;
  EXPECT_EQ(reach[2].host, "cut");
  EXPECT_FALSE(reach[2].reachable);
  EXPECT_EQ(describe_unreachable(reach), "cut (rank 4): " + reach[2].detail);
  EXPECT_NE(reach[2].detail.find(fmt::format("no answer from 127.0.0.4:{} in 0.3 s", silent.port)),
            std::string::npos)
      << reach[2].detail;
}

TEST(PeerProbe, AnAddressEveryHostHasProvesNothing) {
  // Both hosts carry 127.0.0.9 (as every node may carry docker0's 172.17.0.1): a connection
  // there reaches the prober itself and is refused at once. The cut host must still be named.
  LocalPort silent(LocalPort::Silent, "127.0.0.4"), shared(LocalPort::Closed, "127.0.0.9");
  auto d = PeerDirectory::from_endpoints(
      0, {{"self", {"127.0.0.1", "127.0.0.9"}, silent.port}, {"cut", {"127.0.0.9", "127.0.0.4"}, silent.port}});
  auto reach = d->probe({1}, std::chrono::milliseconds(200));
  ASSERT_EQ(reach.size(), 1u);
  EXPECT_FALSE(reach[0].reachable) << reach[0].detail;
  EXPECT_EQ(reach[0].detail.find("127.0.0.9"), std::string::npos) << reach[0].detail;
  // A host with one network answering and another silent is partly reachable, and named (one
  // probe port, two addresses: a listener on one, a full queue on the other).
  LocalPort up(LocalPort::Listening, "127.0.0.2"), cut(LocalPort::Silent, "127.0.0.6", up.port);
  auto d2 = PeerDirectory::from_endpoints(
      0, {{"self", {"127.0.0.1"}, up.port}, {"half", {"127.0.0.2", "127.0.0.6"}, up.port}});
  reach = d2->probe({1}, std::chrono::milliseconds(200));
  ASSERT_EQ(reach.size(), 1u);
  EXPECT_TRUE(reach[0].reachable);
  EXPECT_TRUE(reach[0].partial) << reach[0].detail;
  EXPECT_NE(describe_unreachable(reach).find("half (rank 1): 127.0.0.2:"), std::string::npos);
  EXPECT_NE(reach[0].detail.find("one of its networks is cut"), std::string::npos) << reach[0].detail;
  // A peer whose listener could not be opened is reported, without spending the budget.
  auto d3 = PeerDirectory::from_endpoints(0, {{"self", {"127.0.0.1"}, 1}, {"nolistener", {"127.0.0.5"}, 0}});
  const auto t0 = std::chrono::steady_clock::now();
  reach = d3->probe({1}, std::chrono::milliseconds(1000));
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 0.5);
  ASSERT_EQ(reach.size(), 1u);
  EXPECT_TRUE(reach[0].reachable);
  EXPECT_NE(reach[0].detail.find("not probed"), std::string::npos) << reach[0].detail;
}

TEST(PeerProbe, ExchangeOnOneRankPublishesAListener) {
  auto world = make_single_rank_communicator();
  auto d = PeerDirectory::exchange(*world);
  ASSERT_EQ(d->endpoints().size(), 1u);
  EXPECT_GT(d->endpoints()[0].port, 0);
  EXPECT_FALSE(d->endpoints()[0].addrs.empty());
  // Its own listener answers a connection (what a peer's probe would see).
  auto other = PeerDirectory::from_endpoints(0, {{"me", {"127.0.0.7"}, 1},
                                                 {"peer", {"127.0.0.1"}, d->endpoints()[0].port}});
  const auto reach = other->probe({1}, std::chrono::milliseconds(500));
  ASSERT_EQ(reach.size(), 1u);
  EXPECT_TRUE(reach[0].reachable);
  EXPECT_NE(reach[0].detail.find("answered"), std::string::npos) << reach[0].detail;
}

// A timed-out collective every member started, as each rank dumps it, with its probes.
RankDump cut_dump(int rank, int world, const std::string& host, const std::string& group,
                  std::vector<HostReach> reach) {
  RankDump d;
  d.rank = rank;
  d.world_size = world;
  d.host = host;
  d.dumped_at_ms = 2e6;
  d.reason = "collective timed out";
  d.records.push_back({1, 1, "all_reduce(sum)", group, "grad.bucket", 64, RecordState::Completed, 1e6, 1e6 + 1, "main"});
  d.records.push_back({2, 2, "all_reduce(sum)", group, "loss.mean", 4, RecordState::Failed, 1e6 + 2, 0, "main"});
  d.groups[group] = {2, 1};
  d.reach = std::move(reach);
  return d;
}

TEST(Desync, ACutLinkNamesBothSidesOfTheCut) {
  const std::vector<RankDump> dumps = {
      cut_dump(0, 2, "n1", "dp[0,1]", {{"n2", {1}, false, "no answer"}}),
      cut_dump(1, 2, "n2", "dp[0,1]", {{"n1", {0}, false, "no answer"}})};
  const Diagnosis d = diagnose(dumps, 2);
  EXPECT_TRUE(d.culprits.empty());
  EXPECT_EQ(d.line,
            "desync: all ranks of dp[0,1] started #2 (loss.mean); none completed: the network (TCP "
            "probes at the timeout), not a rank falling behind; n1 (rank 0) and n2 (rank 1) cannot "
            "reach each other");
  // The probes round-trip through the record file.
  EXPECT_EQ(rank_dump_from_json(to_json(dumps[0])).reach.at(0).host, "n2");
  EXPECT_FALSE(rank_dump_from_json(to_json(dumps[0])).reach.at(0).reachable);
}

TEST(Desync, TheHostEveryoneElseMissesIsNamed) {
  const std::string g = "world[0,1,2]";
  const std::vector<RankDump> dumps = {
      cut_dump(0, 3, "n1", g, {{"n2", {1}, true, "answered"}, {"n3", {2}, false, "no answer"}}),
      cut_dump(1, 3, "n2", g, {{"n1", {0}, true, "answered"}, {"n3", {2}, false, "no answer"}}),
      cut_dump(2, 3, "n3", g, {{"n1", {0}, false, "no answer"}, {"n2", {1}, false, "no answer"}})};
  const std::string line = diagnose(dumps, 3).line;
  EXPECT_NE(line.find("; n3 (rank 2) is unreachable from n1, n2"), std::string::npos) << line;
}

TEST(Desync, ARankBlockedOnTheNetworkIsNotTheCulprit) {
  // tp2 x dp2 on two hosts, the link cut during the DP loss reduction: ranks 1 and 3 got theirs
  // through and wait for their TP peers in grad_norm; ranks 0 and 2 are still in dp[0,2] #2.
  std::vector<RankDump> dumps;
  for (int r : {0, 2}) {
    RankDump d = cut_dump(r, 4, r == 0 ? "n1" : "n2", "dp[0,2]",
                          {{r == 0 ? "n2" : "n1", {2 - r}, false, "no answer"}});
    d.records.insert(d.records.begin(), {0, 1, "all_reduce(sum)", r == 0 ? "tp[0,1]" : "tp[2,3]",
                                         "attn.qkv.bwd", 4, RecordState::Completed, 1e6 - 1, 1e6 - 0.5, "main"});
    d.groups[r == 0 ? "tp[0,1]" : "tp[2,3]"] = {1, 1};
    dumps.push_back(d);
  }
  for (int r : {1, 3}) {
    RankDump d = cut_dump(r, 4, r == 1 ? "n1" : "n2", "dp[1,3]", {});
    d.records[1].state = RecordState::Completed;
    d.groups["dp[1,3]"] = {2, 2};
    const std::string tp = r == 1 ? "tp[0,1]" : "tp[2,3]";
    d.records.push_back({3, 2, "all_reduce(sum)", tp, "grad_norm", 4, RecordState::Failed, 1e6 + 3, 0, "main"});
    d.groups[tp] = {2, 1};
    dumps.push_back(d);
  }
  const std::string line = diagnose(dumps, 4).line;
  EXPECT_NE(line.find("rank 0 completed collective #1 (tp[0,1] attn.qkv.bwd) and never started #2 "
                      "(tp[0,1] grad_norm), which rank 1 is waiting on, because it is itself "
                      "blocked in #2 (dp[0,2] loss.mean), which every rank of dp[0,2] started"),
            std::string::npos)
      << line;
  EXPECT_NE(line.find("n1 (ranks 0-1) and n2 (ranks 2-3) cannot reach each other"), std::string::npos)
      << line;
}

TEST(StartupGuard, ReportsTheStageItIsStuckInUnlessDisarmed) {
  std::atomic<int> fired{0};
  std::string stage;
  double secs = 0;
  {
    StartupGuard g(std::chrono::milliseconds(100), "MPI_Init", [&](const std::string& s, double t) {
      stage = s;
      secs = t;
      fired++;
    });
    g.stage("connecting the ranks");
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  EXPECT_EQ(fired.load(), 1);
  EXPECT_EQ(stage, "connecting the ranks");
  EXPECT_DOUBLE_EQ(secs, 0.1);
  {
    StartupGuard g(std::chrono::milliseconds(100), "MPI_Init", [&](const std::string&, double) { fired++; });
    g.disarm();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  { StartupGuard g(std::chrono::milliseconds(100), "MPI_Init", [&](const std::string&, double) { fired++; }); }
  EXPECT_EQ(fired.load(), 1) << "a disarmed or destroyed guard stays quiet";
}

}  // namespace
}  // namespace cr
