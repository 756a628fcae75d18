// The flight recorder: each rank's last N collectives, written down when the job hangs, and the
// desync diagnosis that names the rank the others are waiting for.
//
// Where it sits: run_train attaches one recorder per rank to its world, TP and DP communicators
// right after build_groups (attach_flight_recorder). The communicators feed it (communicator.h,
// contract 4): next() records "started", completed() "completed", fail() "failed". The record is
// written to <run.dir>/flight/rank-N.json when
//   - a collective of this rank times out (Communicator::fail), or
//   - the watchdog sees this rank make no progress for parallel.timeout_s outside a collective
//     (stuck in compute, or hung before issuing one): that rank cannot time out by itself.
// After a timeout rank 0 waits (bounded) for every rank's file, runs diagnose() (pure, over the
// parsed records) and prints one `desync:` line, also written to flight/diagnosis.txt; the other
// ranks wait (bounded) for that file before the job is aborted. `chainrule diagnose RUN_DIR` and
// `chainrule launch` compute the same diagnosis later from the files.
//
// Who waits on whom: a rank with a pending collective #S on group G waits on every member of G
// that has not started #S (or left no record). Following that relation to ranks that wait on
// nobody gives the culprit(s). When every member started #S and none completed it, no rank fell
// behind: the network or the library is at fault.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "parallel/comm/communicator.h"
#include "parallel/comm/peer_probe.h"

namespace cr {

// ---- the records ------------------------------------------------------------------------------

enum class RecordState { Started, Completed, Failed };

struct FlightRecord {
  uint64_t index = 0;  // this rank's running count of collectives started, all groups (1-based):
                       // ranks run one program, so equal indexes are the same point in it
  uint64_t seq = 0;    // the collective's number on its group
  std::string op, group, label;
  size_t bytes = 0;
  RecordState state = RecordState::Started;
  double start_ms = 0, end_ms = 0;  // wall clock, ms since the epoch; end_ms 0 while pending
  std::string thread;               // "main", or "comm" (the communication thread)
  bool pending() const { return state != RecordState::Completed; }
};

// Per group: the highest sequence numbers started and completed (kept outside the ring, so they
// survive its wrapping).
struct GroupProgress {
  uint64_t last_started = 0, last_completed = 0;
};

// One rank's record: what rank-N.json holds.
struct RankDump {
  int rank = 0, world_size = 1;
  std::string host;
  long pid = 0;
  double dumped_at_ms = 0;
  std::string reason;         // "collective #40 on tp[2,3] timed out", "no progress for 30 s"
  std::string last_progress;  // what the rank did last: a collective event or a progress note
  double last_progress_ms = 0;
  uint64_t collectives_started = 0;
  std::map<std::string, GroupProgress> groups;
  std::vector<FlightRecord> records;  // oldest first
  // The TCP probes of the other hosts of the group whose collective failed (peer_probe.h);
  // empty when none ran (a stall, a single host, no peer directory).
  std::vector<HostReach> reach;
};

nlohmann::json to_json(const RankDump& d);
// Throws (nlohmann::json exceptions, or Error) when `j` is not a rank record.
RankDump rank_dump_from_json(const nlohmann::json& j);
// Every flight/rank-*.json under `flight_dir`, by rank; InputError naming the file when one
// cannot be read or parsed. Files dumped before `since_ms` (an earlier job) are skipped.
std::vector<RankDump> read_flight_dir(const std::string& flight_dir, double since_ms = 0);

// ---- the diagnosis (pure) ---------------------------------------------------------------------

struct Diagnosis {
  std::string line;           // "desync: rank 3 completed collective #39 (...) and never ..."
  std::vector<int> culprits;  // the ranks everyone waits on (empty: none found, or a network case)
};
// `dumps` need not cover every rank: a rank without one is "missing" (dead, or stuck before it
// could write).
Diagnosis diagnose(const std::vector<RankDump>& dumps, int world_size);
// A short per-rank table: rank, state, last completed collective, pending collective.
std::string rank_table(const std::vector<RankDump>& dumps, int world_size);
// The world ranks in a group name, "tp[2,3]" -> {2, 3}; empty when the name has no list.
std::vector<int> group_members(const std::string& group);
// Current wall clock in ms since the epoch, the records' time base.
double wall_ms();

// ---- the recorder -----------------------------------------------------------------------------

class FlightRecorder {
 public:
  struct Identity {
    int rank = 0, world_size = 1;
    std::string host;
    long pid = 0;
  };
  // `flight_dir`: <run.dir>/flight. `capacity`: parallel.flight_records.
  FlightRecorder(std::string flight_dir, int capacity, Identity id);

  void add_group(const std::string& name);  // so a dump lists groups with no collective yet
  // Where the other ranks are (PeerDirectory::exchange), for probe_peers. Optional.
  void set_peers(std::shared_ptr<const PeerDirectory> peers);
  // The longest probe_peers may take (Communicator::fail's budget: half the timeout, at most
  // this); the failure path's waits allow for it.
  static constexpr std::chrono::milliseconds kMaxProbe{1500};
  // After a collective on `group` failed: probes the group's other hosts (bounded by `budget`),
  // keeps the outcome for the dump and returns describe_unreachable's text ("" when every host
  // answered, or without peers).
  std::string probe_peers(const std::string& group, std::chrono::milliseconds budget);
  void started(const CollectiveInfo& c);
  void completed(const CollectiveInfo& c);
  void failed(const CollectiveInfo& c, const std::string& why);
  // A cheap phase marker ("checkpoint: writing shards") for long stretches without collectives.
  void note_progress(const std::string& what);

  RankDump snapshot(const std::string& reason) const;
  // Writes rank-N.json atomically (temp file + rename). Never throws: false after a warning.
  bool dump(const std::string& reason);
  // Watchdog step: dumps once per stall when nothing happened for `timeout` and no collective
  // of this rank is pending (a pending one reports through its own deadline). True if it dumped.
  bool dump_if_stalled(std::chrono::milliseconds timeout);
  // The end of a failed job, called by Communicator::fail before it aborts: dump, then rank 0
  // waits (bounded) for the others' dumps, prints the diagnosis and writes diagnosis.txt; other
  // ranks wait (bounded) for that file, so their abort cannot kill rank 0 before it prints. When
  // rank 0 writes none (it is the stuck one), the lowest rank that timed out stands in.
  void settle_failure(const std::string& reason, std::chrono::milliseconds timeout);

  const std::string& flight_dir() const { return dir_; }
  std::string path() const;  // this rank's rank-N.json
  // Rank 0 at run start: removes rank-*.json and diagnosis.txt left by an earlier run.
  void remove_stale_files() const;

 private:
  FlightRecord* find(const CollectiveInfo& c);  // newest first; null when evicted
  void touch(std::string what);                 // progress: under mu_
  void wait_for_dumps(double fresh_since_ms, std::chrono::milliseconds grace) const;
  bool wait_for_diagnosis(std::chrono::milliseconds wait) const;  // true: diagnosis.txt is there
  int lowest_timed_out_rank() const;  // among the dumps written; -1: none
  void report_diagnosis() const;

  const std::string dir_;
  const Identity id_;
  const std::thread::id main_thread_;
  mutable std::mutex mu_;
  std::vector<FlightRecord> ring_;
  uint64_t count_ = 0;  // records ever pushed; ring_[(count_ - 1) % capacity] is the newest
  std::map<std::string, GroupProgress> groups_;
  std::shared_ptr<const PeerDirectory> peers_;
  std::vector<HostReach> reach_;
  std::string last_progress_;
  double last_progress_ms_ = 0;
  std::chrono::steady_clock::time_point last_progress_at_;
  std::chrono::steady_clock::time_point stall_dumped_for_{};  // the stall already dumped
  bool failing_ = false;  // a failure dump was written: the watchdog stays quiet
  bool probing_ = false;  // probe_peers ran (a failure is on its way): likewise
  std::mutex dump_mu_;    // one writer of rank-N.json at a time
};

// Dumps the recorder once per stall (see dump_if_stalled). Its own thread; never calls MPI.
class Watchdog {
 public:
  Watchdog(std::shared_ptr<FlightRecorder> recorder, std::chrono::milliseconds timeout);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  void run();
  std::shared_ptr<FlightRecorder> recorder_;
  std::chrono::milliseconds timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;  // last: starts after the members it uses exist
};

// What run_train holds for the run: the recorder (also held by the communicators) and the
// watchdog, which stops when this goes out of scope.
struct FlightSession {
  std::shared_ptr<FlightRecorder> recorder;
  std::unique_ptr<Watchdog> watchdog;
};

// Attaches one recorder to the rank's three communicators (timeout: world.timeout()), hands them
// the test hooks (null: none), starts the watchdog (with more than one rank) and, on world rank
// 0, removes an earlier run's flight files from <run_dir>/flight.
[[nodiscard]] FlightSession attach_flight_recorder(Communicator& world, Communicator& tp,
                                                   Communicator& dp, const std::string& run_dir,
                                                   int capacity,
                                                   std::shared_ptr<TestFaultHooks> hooks);

}  // namespace cr
