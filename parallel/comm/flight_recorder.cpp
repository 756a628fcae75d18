// The flight recorder, its watchdog and the desync diagnosis; see flight_recorder.h for where
// they sit. Sections: records <-> JSON, reading a flight dir, the diagnosis (pure), the per-rank
// table, the recorder, the end of a failed job, the watchdog, attaching to the communicators.
#include "parallel/comm/flight_recorder.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "core/common/error.h"
#include "core/common/log.h"

namespace cr {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

namespace {

// How long rank 0 waits for the other ranks' dumps after its own timeout, and how long the other
// ranks wait for rank 0's diagnosis.txt before they abort. Together they keep a failed job's end
// within parallel.timeout_s + 10 s (tests/dist/desync.sh checks it).
// Both include FlightRecorder::kMaxProbe: a rank that probes its peers (probe_peers) before it
// dumps may write its record that much later than rank 0, which had nothing to probe.
constexpr auto kDumpGrace = std::chrono::milliseconds(2500) + FlightRecorder::kMaxProbe;
constexpr auto kDiagnosisWait = std::chrono::milliseconds(3500) + FlightRecorder::kMaxProbe;
// When rank 0 wrote no diagnosis (it is the rank that hung, or it died), the lowest rank that
// timed out writes it instead; the others give it this long.
constexpr auto kStandInWait = std::chrono::milliseconds(1500);
// A collective pending for less than timeout + this still reports through its own deadline, so
// the watchdog leaves it alone.
constexpr double kPendingGraceMs = 2000;

const char* state_name(RecordState s) {
  switch (s) {
    case RecordState::Started: return "started";
    case RecordState::Completed: return "completed";
    case RecordState::Failed: return "failed";
  }
  return "?";
}

RecordState state_from(const std::string& s) {
  if (s == "started") return RecordState::Started;
  if (s == "completed") return RecordState::Completed;
  if (s == "failed") return RecordState::Failed;
  CR_THROW("unknown collective state '{}'", s);
}

// "tp[2,3] attn.proj.fwd": where a collective ran and what it was for.
std::string where(const FlightRecord& r) {
  return r.label.empty() ? r.group : r.group + " " + r.label;
}

// Writes `text` to `path` through a temp file and a rename, so readers never see half a file.
void write_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << text;
    f.close();
    if (!f) throw std::runtime_error("cannot write " + tmp);
  }
  fs::rename(tmp, path);
}

double mtime_ms(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return -1;
  return (double)st.st_mtim.tv_sec * 1e3 + (double)st.st_mtim.tv_nsec / 1e6;
}

bool is_rank_file(const std::string& name) {
  static const std::regex re(R"(rank-[0-9]+\.json(\.tmp)?)");
  return std::regex_match(name, re);
}

}  // namespace

double wall_ms() {
  using namespace std::chrono;
  return (double)duration_cast<microseconds>(system_clock::now().time_since_epoch()).count() / 1e3;
}

std::vector<int> group_members(const std::string& group) {
  std::vector<int> out;
  const auto open = group.find('['), close = group.rfind(']');
  if (open == std::string::npos || close == std::string::npos || close < open) return out;
  std::stringstream ss(group.substr(open + 1, close - open - 1));
  for (std::string item; std::getline(ss, item, ',');) {
    try {
      out.push_back(std::stoi(item));
    } catch (const std::exception&) {
      return {};  // not a list of world ranks: the diagnosis cannot use this group
    }
  }
  return out;
}

// ---- records <-> JSON -------------------------------------------------------------------------

nlohmann::json to_json(const RankDump& d) {
  nlohmann::json groups = nlohmann::json::object();
  for (const auto& [name, g] : d.groups)
    groups[name] = {{"last_started", g.last_started}, {"last_completed", g.last_completed}};
  nlohmann::json records = nlohmann::json::array();
  for (const auto& r : d.records)
    records.push_back({{"index", r.index}, {"seq", r.seq}, {"op", r.op}, {"group", r.group},
                       {"label", r.label}, {"bytes", r.bytes}, {"state", state_name(r.state)},
                       {"start_ms", r.start_ms}, {"end_ms", r.end_ms}, {"thread", r.thread}});
  nlohmann::json reach = nlohmann::json::array();
  for (const auto& h : d.reach)
    reach.push_back({{"host", h.host}, {"ranks", h.ranks}, {"reachable", h.reachable},
                     {"partial", h.partial}, {"detail", h.detail}});
  return {{"format", "chainrule flight record 1"}, {"rank", d.rank}, {"world_size", d.world_size},
          {"host", d.host}, {"pid", d.pid}, {"dumped_at_ms", d.dumped_at_ms}, {"reason", d.reason},
          {"last_progress", d.last_progress}, {"last_progress_ms", d.last_progress_ms},
          {"collectives_started", d.collectives_started}, {"groups", groups},
          {"records", records}, {"reach", reach}};
}

RankDump rank_dump_from_json(const nlohmann::json& j) {
  RankDump d;
  d.rank = j.at("rank").get<int>();
  d.world_size = j.at("world_size").get<int>();
  d.host = j.value("host", "");
  d.pid = j.value("pid", 0L);
  d.dumped_at_ms = j.at("dumped_at_ms").get<double>();
  d.reason = j.value("reason", "");
  d.last_progress = j.value("last_progress", "");
  d.last_progress_ms = j.value("last_progress_ms", 0.0);
  d.collectives_started = j.value("collectives_started", (uint64_t)0);
  for (const auto& [name, g] : j.at("groups").items())
    d.groups[name] = {g.at("last_started").get<uint64_t>(), g.at("last_completed").get<uint64_t>()};
  for (const auto& r : j.at("records"))
    d.records.push_back({r.value("index", (uint64_t)0), r.at("seq").get<uint64_t>(),
                         r.at("op").get<std::string>(), r.at("group").get<std::string>(),
                         r.value("label", ""), r.value("bytes", (size_t)0),
                         state_from(r.at("state").get<std::string>()), r.value("start_ms", 0.0),
                         r.value("end_ms", 0.0), r.value("thread", "main")});
  if (j.contains("reach"))  // written since the peer probes (older records have none)
    for (const auto& h : j.at("reach"))
      d.reach.push_back({h.at("host").get<std::string>(), h.at("ranks").get<std::vector<int>>(),
                         h.at("reachable").get<bool>(), h.value("partial", false),
                         h.value("detail", "")});
  CR_CHECK(d.rank >= 0 && d.rank < d.world_size, "rank {} outside a world of {}", d.rank,
           d.world_size);
  return d;
}

// ---- reading a flight dir ---------------------------------------------------------------------

std::vector<RankDump> read_flight_dir(const std::string& flight_dir, double since_ms) {
  std::error_code ec;
  if (!fs::is_directory(flight_dir, ec))
    CR_INPUT_ERROR("{}: no flight records (no such directory): no rank of the job timed out or "
                   "stalled", flight_dir);
  std::vector<RankDump> out;
  for (const auto& e : fs::directory_iterator(flight_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!is_rank_file(name) || name.ends_with(".tmp")) continue;
    try {
      std::ifstream f(e.path());
      RankDump d = rank_dump_from_json(nlohmann::json::parse(f));
      if (d.dumped_at_ms >= since_ms) out.push_back(std::move(d));
    } catch (const std::exception& err) {
      CR_INPUT_ERROR("{}: not a chainrule flight record: {}", e.path().string(), err.what());
    }
  }
  if (ec) CR_INPUT_ERROR("{}: cannot list: {}", flight_dir, ec.message());
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.rank < b.rank; });
  return out;
}

// ---- the diagnosis ----------------------------------------------------------------------------

namespace {

using ByRank = std::map<int, const RankDump*>;

// `waiter` has collective `rec` pending, and `target`, a member of its group, has not started it
// (or left no record: `missing`).
struct Edge {
  int waiter = 0, target = 0;
  const FlightRecord* rec = nullptr;
  bool missing = false;
};

uint64_t last_started_on(const RankDump& d, const std::string& group) {
  uint64_t s = 0;
  if (const auto it = d.groups.find(group); it != d.groups.end()) s = it->second.last_started;
  for (const auto& r : d.records)
    if (r.group == group) s = std::max(s, r.seq);
  return s;
}

const FlightRecord* last_completed_on(const RankDump& d, const std::string& group) {
  const FlightRecord* best = nullptr;
  for (const auto& r : d.records)
    if (r.group == group && r.state == RecordState::Completed && (!best || r.seq > best->seq))
      best = &r;
  return best;
}

std::vector<Edge> wait_edges(const ByRank& by_rank) {
  std::vector<Edge> edges;
  for (const auto& [rank, d] : by_rank)
    for (const auto& rec : d->records) {
      if (!rec.pending()) continue;
      for (int m : group_members(rec.group)) {
        if (m == rank) continue;
        const auto it = by_rank.find(m);
        if (it == by_rank.end())
          edges.push_back({rank, m, &rec, true});
        else if (last_started_on(*it->second, rec.group) < rec.seq)
          edges.push_back({rank, m, &rec, false});
      }
    }
  return edges;
}

// The ranks waited on that wait on nobody themselves: where the chains end.
std::vector<int> chain_ends(const std::vector<Edge>& edges) {
  std::set<int> waiters, targets;
  for (const auto& e : edges) {
    waiters.insert(e.waiter);
    targets.insert(e.target);
  }
  std::vector<int> out;
  for (int t : targets)
    if (!waiters.count(t)) out.push_back(t);
  return out;
}

// Every rank that waits on `culprit`, directly or through other ranks.
std::set<int> waiting_on(int culprit, const std::vector<Edge>& edges) {
  std::set<int> seen;
  std::vector<int> todo{culprit};
  while (!todo.empty()) {
    const int t = todo.back();
    todo.pop_back();
    for (const auto& e : edges)
      if (e.target == t && e.waiter != culprit && seen.insert(e.waiter).second)
        todo.push_back(e.waiter);
  }
  return seen;
}

// "rank 2", "ranks 0 and 2", "ranks 0, 1 and 2".
std::string rank_list(const std::set<int>& ranks) {
  std::string s;
  int i = 0;
  for (int r : ranks) {
    if (i > 0) s += i + 1 == (int)ranks.size() ? " and " : ", ";
    s += std::to_string(r);
    i++;
  }
  return (ranks.size() == 1 ? "rank " : "ranks ") + s;
}

// Of the collectives the culprit never started, the one it should have issued first: the one
// earliest in the program (ranks run the same program, so the waiter's running index says where),
// then the one waited on longest.
const Edge* first_edge_into(int culprit, const std::vector<Edge>& edges) {
  const Edge* first = nullptr;
  for (const auto& e : edges) {
    if (e.target != culprit) continue;
    if (!first || std::tie(e.rec->index, e.rec->start_ms, e.waiter) <
                      std::tie(first->rec->index, first->rec->start_ms, first->waiter))
      first = &e;
  }
  return first;
}

std::string describe_culprit(int culprit, const ByRank& by_rank, const std::vector<Edge>& edges) {
  const Edge& e = *first_edge_into(culprit, edges);
  const FlightRecord& w = *e.rec;
  const std::set<int> waiters = waiting_on(culprit, edges);
  const std::string who = rank_list(waiters) + (waiters.size() == 1 ? " is" : " are");
  if (e.missing)
    return fmt::format("rank {} left no flight record (dead or stuck before it could write); {} "
                       "waiting on it, first in collective #{} ({})",
                       culprit, who, w.seq, where(w));
  const RankDump& d = *by_rank.at(culprit);
  std::string did;
  if (const FlightRecord* last = last_completed_on(d, w.group))
    did = fmt::format("completed collective #{} ({}) and never started #{} ({})", last->seq,
                      where(*last), w.seq, where(w));
  else if (const auto g = d.groups.find(w.group); g != d.groups.end() && g->second.last_completed)
    did = fmt::format("completed collective #{} on {} and never started #{} ({})",
                      g->second.last_completed, w.group, w.seq, where(w));
  else
    did = fmt::format("never started collective #{} ({}){}", w.seq, where(w),
                      w.seq == 1 ? ", its first on that group" : "");
  // The culprit may itself be blocked in an earlier collective that every member started (it
  // waits on nobody, so the chain ends here): then that collective, not the rank, is the cause.
  const FlightRecord* blocked = nullptr;
  for (const auto& r : d.records)
    if (r.pending() && (!blocked || r.index < blocked->index)) blocked = &r;
  if (blocked)
    return fmt::format("rank {} {}, which {} waiting on, because it is itself blocked in #{} ({}), "
                       "which every rank of {} started: a network or library problem",
                       culprit, did, who, blocked->seq, where(*blocked), blocked->group);
  return fmt::format("rank {} {}, which {} waiting on", culprit, did, who);
}

// The hosts that could not reach each other, from every dump's probes: "crnode2 (ranks 2-3) is
// unreachable from crnode1, crnode3", or for hosts cut off from each other, "crnode1 (ranks 0-1)
// and crnode2 (ranks 2-3) cannot reach each other". Empty when no probe failed.
std::string describe_reach(const ByRank& by_rank) {
  std::map<std::string, std::vector<int>> ranks_of;  // host -> ranks, from the dumps and probes
  std::map<std::string, std::set<std::string>> missed_by;  // host -> hosts that could not reach it
  for (const auto& [rank, d] : by_rank) {
    ranks_of[d->host].push_back(rank);
    for (const auto& h : d->reach) {
      auto& rs = ranks_of[h.host];
      rs.insert(rs.end(), h.ranks.begin(), h.ranks.end());
      if (!h.reachable) missed_by[h.host].insert(d->host);
    }
  }
  if (missed_by.empty()) return "";
  const auto named = [&](const std::string& h) {
    const std::string rs = rank_ranges(ranks_of[h]);
    return fmt::format("{} (rank{} {})", h, rs.find_first_of(",-") == std::string::npos ? "" : "s", rs);
  };
  size_t most = 0;
  for (const auto& [h, from] : missed_by) most = std::max(most, from.size());
  std::vector<std::string> worst;
  for (const auto& [h, from] : missed_by)
    if (from.size() == most) worst.push_back(h);
  const std::string& x = worst.front();
  // One host missed by the most others, and not merely one side of a two-host cut.
  if (worst.size() == 1 && (most >= 2 || !missed_by.count(*missed_by.at(x).begin()))) {
    std::string from;
    for (const auto& h : missed_by.at(x)) from += (from.empty() ? "" : ", ") + h;
    return fmt::format("{} is unreachable from {}", named(x), from);
  }
  std::vector<std::string> parts;
  for (const auto& [b, froms] : missed_by)
    for (const auto& a : froms) {
      const bool both = missed_by.count(a) && missed_by.at(a).count(b);
      if (both && a > b) continue;  // the pair is listed once
      parts.push_back(both ? fmt::format("{} and {} cannot reach each other", named(std::min(a, b)),
                                         named(std::max(a, b)))
                           : fmt::format("{} is unreachable from {}", named(b), a));
    }
  std::string s;
  for (const auto& p : parts) s += (s.empty() ? "" : "; ") + p;
  return s;
}

// No rank waits on another: if a collective is pending, every member of its group started it.
std::string describe_network(const ByRank& by_rank) {
  const FlightRecord* first = nullptr;
  for (const auto& [rank, d] : by_rank)
    for (const auto& r : d->records)
      if (r.pending() && (!first || r.start_ms < first->start_ms)) first = &r;
  if (!first) return "";
  std::set<int> done;
  for (int m : group_members(first->group))
    if (const auto it = by_rank.find(m); it != by_rank.end())
      for (const auto& r : it->second->records)
        if (r.group == first->group && r.seq == first->seq && !r.pending()) done.insert(m);
  const std::string what = first->label.empty() ? "" : " (" + first->label + ")";
  if (const std::string reach = describe_reach(by_rank); !reach.empty())
    return fmt::format("all ranks of {} started #{}{}; {}: the network (TCP probes at the "
                       "timeout), not a rank falling behind",
                       first->group, first->seq, what,
                       done.empty() ? "none completed" : rank_list(done) + " completed it") +
           "; " + reach;
  if (done.empty())
    return fmt::format("all ranks of {} started #{}{}; none completed: a network or library "
                       "problem, not a rank falling behind",
                       first->group, first->seq, what);
  return fmt::format("all ranks of {} started #{}{} and {} completed it while the others still "
                     "wait: a network or library problem, not a rank falling behind",
                     first->group, first->seq, what, rank_list(done));
}

// Edges but no chain end: the ranks wait on each other (collectives issued in different orders).
std::string describe_cycle(const std::vector<Edge>& edges) {
  std::set<int> seen;
  std::vector<std::string> parts;
  for (const auto& e : edges)
    if (seen.insert(e.waiter).second)
      parts.push_back(fmt::format("rank {} waits on rank {} in #{} ({})", e.waiter, e.target,
                                  e.rec->seq, where(*e.rec)));
  std::string s;
  for (const auto& p : parts) s += (s.empty() ? "" : ", ") + p;
  return "circular wait: " + s + ": the ranks issued collectives in different orders";
}

// Nobody waits on a collective: name the ranks that stalled, and the ones with no record.
std::string describe_stalls(const ByRank& by_rank, int world_size) {
  std::vector<std::string> parts;
  for (const auto& [rank, d] : by_rank)
    if (d->reason.starts_with("no progress"))
      parts.push_back(fmt::format("rank {}: {}", rank, d->reason));
  std::set<int> missing;
  for (int r = 0; r < world_size; r++)
    if (!by_rank.count(r)) missing.insert(r);
  if (!missing.empty())
    parts.push_back(rank_list(missing) + " left no flight record (dead or stuck before it could write)");
  std::string s = "no rank is waiting on a collective";
  for (const auto& p : parts) s += "; " + p;
  return s;
}

}  // namespace

Diagnosis diagnose(const std::vector<RankDump>& dumps, int world_size) {
  ByRank by_rank;
  for (const auto& d : dumps) by_rank[d.rank] = &d;
  Diagnosis out;
  if (by_rank.empty()) {
    out.line = "desync: no rank left a flight record";
    return out;
  }
  const std::vector<Edge> edges = wait_edges(by_rank);
  if (edges.empty()) {
    const std::string net = describe_network(by_rank);
    out.line = "desync: " + (net.empty() ? describe_stalls(by_rank, world_size) : net);
    return out;
  }
  out.culprits = chain_ends(edges);
  if (out.culprits.empty()) {
    out.line = "desync: " + describe_cycle(edges);
    return out;
  }
  std::string s;
  for (int c : out.culprits) s += (s.empty() ? "" : "; ") + describe_culprit(c, by_rank, edges);
  // Hosts that did not answer the probes are named whatever the chain (a cut link also shows as
  // ranks waiting on a rank that is blocked in the collective that crosses it).
  if (const std::string reach = describe_reach(by_rank); !reach.empty()) s += "; " + reach;
  out.line = "desync: " + s;
  return out;
}

// ---- the per-rank table -----------------------------------------------------------------------

namespace {

std::string rank_state(const RankDump& d) {
  bool pending = false;
  for (const auto& r : d.records) {
    if (r.state == RecordState::Failed) return "timed out";
    pending = pending || r.pending();
  }
  if (d.reason.starts_with("no progress")) return "stalled";
  return pending ? "waiting" : "idle";
}

std::string last_completed_cell(const RankDump& d) {
  const FlightRecord* last = nullptr;
  for (const auto& r : d.records)
    if (r.state == RecordState::Completed && (!last || r.end_ms >= last->end_ms)) last = &r;
  return last ? fmt::format("#{} {}", last->seq, where(*last)) : "-";
}

std::string pending_cell(const RankDump& d) {
  const FlightRecord* first = nullptr;
  int n = 0;
  for (const auto& r : d.records)
    if (r.pending()) {
      n++;
      if (!first || r.index < first->index) first = &r;
    }
  if (!first) return "-";
  std::string s = fmt::format("#{} {} ({}, {} thread, {:.1f} s)", first->seq, where(*first),
                              first->op, first->thread, (d.dumped_at_ms - first->start_ms) / 1e3);
  return n > 1 ? s + fmt::format(" +{} more", n - 1) : s;
}

}  // namespace

std::string rank_table(const std::vector<RankDump>& dumps, int world_size) {
  std::string out = fmt::format("{:>5}  {:<10} {:<40} {}\n", "rank", "state", "last completed",
                                "pending");
  std::map<int, const RankDump*> by_rank;
  for (const auto& d : dumps) by_rank[d.rank] = &d;
  for (int r = 0; r < world_size; r++) {
    const auto it = by_rank.find(r);
    if (it == by_rank.end()) {
      out += fmt::format("{:>5}  {:<10} {:<40} {}\n", r, "missing", "-", "-");
      continue;
    }
    const RankDump& d = *it->second;
    out += fmt::format("{:>5}  {:<10} {:<40} {}\n", r, rank_state(d), last_completed_cell(d),
                       pending_cell(d));
  }
  return out;
}

// ---- the recorder -----------------------------------------------------------------------------

FlightRecorder::FlightRecorder(std::string flight_dir, int capacity, Identity id)
    : dir_(std::move(flight_dir)),
      id_(std::move(id)),
      main_thread_(std::this_thread::get_id()),
      ring_((size_t)std::max(1, capacity)) {
  touch("attached the flight recorder");
}

std::string FlightRecorder::path() const {
  return (fs::path(dir_) / fmt::format("rank-{}.json", id_.rank)).string();
}

void FlightRecorder::touch(std::string what) {
  last_progress_ = std::move(what);
  last_progress_ms_ = wall_ms();
  last_progress_at_ = SteadyClock::now();
}

void FlightRecorder::add_group(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  groups_.try_emplace(name);
}

void FlightRecorder::set_peers(std::shared_ptr<const PeerDirectory> peers) {
  std::lock_guard<std::mutex> lock(mu_);
  peers_ = std::move(peers);
}

std::string FlightRecorder::probe_peers(const std::string& group, std::chrono::milliseconds budget) {
  std::shared_ptr<const PeerDirectory> peers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    peers = peers_;
    probing_ = true;  // a failure is being reported: no stall dump from the watchdog meanwhile
  }
  if (!peers) return "";
  const std::vector<HostReach> reach = peers->probe(group_members(group), budget);  // unlocked
  std::lock_guard<std::mutex> lock(mu_);
  reach_ = reach;
  return describe_unreachable(reach_);
}

void FlightRecorder::started(const CollectiveInfo& c) {
  // The thread that attached the recorder runs the train loop; any other one is the
  // communication thread (parallel.overlap).
  const char* thread = std::this_thread::get_id() == main_thread_ ? "main" : "comm";
  const double now = wall_ms();
  std::lock_guard<std::mutex> lock(mu_);
  count_++;
  ring_[(count_ - 1) % ring_.size()] = {count_, c.seq, c.op, c.group, c.label, c.bytes,
                                        RecordState::Started, now, 0, thread};
  auto& g = groups_[c.group];
  g.last_started = std::max(g.last_started, c.seq);
  touch(fmt::format("started collective #{} ({} {})", c.seq, c.group, c.label));
}

FlightRecord* FlightRecorder::find(const CollectiveInfo& c) {
  const uint64_t n = std::min<uint64_t>(count_, ring_.size());
  for (uint64_t k = 0; k < n; k++) {  // newest first: a completing collective is recent
    FlightRecord& r = ring_[(count_ - 1 - k) % ring_.size()];
    if (r.seq == c.seq && r.group == c.group) return &r;
  }
  return nullptr;
}

void FlightRecorder::completed(const CollectiveInfo& c) {
  const double now = wall_ms();
  std::lock_guard<std::mutex> lock(mu_);
  if (FlightRecord* r = find(c)) {
    r->state = RecordState::Completed;
    r->end_ms = now;
  }
  auto& g = groups_[c.group];
  g.last_completed = std::max(g.last_completed, c.seq);
  touch(fmt::format("completed collective #{} ({} {})", c.seq, c.group, c.label));
}

void FlightRecorder::failed(const CollectiveInfo& c, const std::string&) {
  const double now = wall_ms();
  std::lock_guard<std::mutex> lock(mu_);
  if (FlightRecord* r = find(c)) {
    r->state = RecordState::Failed;
    r->end_ms = now;
  }
}

void FlightRecorder::note_progress(const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  touch(what);
}

RankDump FlightRecorder::snapshot(const std::string& reason) const {
  std::lock_guard<std::mutex> lock(mu_);
  RankDump d;
  d.rank = id_.rank;
  d.world_size = id_.world_size;
  d.host = id_.host;
  d.pid = id_.pid;
  d.dumped_at_ms = wall_ms();
  d.reason = reason;
  d.last_progress = last_progress_;
  d.last_progress_ms = last_progress_ms_;
  d.collectives_started = count_;
  d.groups = groups_;
  d.reach = reach_;
  const uint64_t n = std::min<uint64_t>(count_, ring_.size());
  for (uint64_t i = count_ - n; i < count_; i++) d.records.push_back(ring_[i % ring_.size()]);
  return d;
}

bool FlightRecorder::dump(const std::string& reason) {
  std::lock_guard<std::mutex> lock(dump_mu_);
  try {
    const std::string text = to_json(snapshot(reason)).dump(1) + "\n";
    fs::create_directories(dir_);
    write_atomically(path(), text);
    return true;
  } catch (const std::exception& e) {
    log::warn("flight recorder: cannot write {}: {}", path(), e.what());
    return false;
  }
}

bool FlightRecorder::dump_if_stalled(std::chrono::milliseconds timeout) {
  std::string reason;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = SteadyClock::now();
    if (failing_ || probing_ || now - last_progress_at_ < timeout ||
        stall_dumped_for_ == last_progress_at_)
      return false;
    const double recent = wall_ms() - (double)timeout.count() - kPendingGraceMs;
    const uint64_t n = std::min<uint64_t>(count_, ring_.size());
    for (uint64_t k = 0; k < n; k++) {
      const FlightRecord& r = ring_[(count_ - 1 - k) % ring_.size()];
      if (r.pending() && r.start_ms > recent) return false;  // its own deadline will report
    }
    stall_dumped_for_ = last_progress_at_;
    reason = fmt::format("no progress for {:.1f} s (last: {})",
                         std::chrono::duration<double>(now - last_progress_at_).count(),
                         last_progress_);
  }
  // A failure dump that starts meanwhile still overwrites this one: dump() is serialised and
  // the failure path sets failing_ first.
  if (!dump(reason)) return false;
  log::warn("{}; flight record written to {}", reason, path());
  return true;
}

void FlightRecorder::remove_stale_files() const {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (is_rank_file(name) || name == "diagnosis.txt" || name == "diagnosis.txt.tmp")
      fs::remove(e.path(), ec);
  }
}

// ---- the end of a failed job ------------------------------------------------------------------

void FlightRecorder::settle_failure(const std::string& reason, std::chrono::milliseconds timeout) {
  const double failed_at = wall_ms();
  bool first = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    first = !std::exchange(failing_, true);
  }
  if (!first) {  // another thread of this rank is settling already and will end the job
    std::this_thread::sleep_for(kDumpGrace + kDiagnosisWait + kStandInWait);
    return;
  }
  dump(reason);
  try {
    if (id_.rank == 0) {
      wait_for_dumps(failed_at - (double)timeout.count() - 1000.0, kDumpGrace);
      report_diagnosis();
      return;
    }
    if (!wait_for_diagnosis(kDiagnosisWait)) {
      // Rank 0 is the rank that is stuck, or dead: the lowest rank that timed out stands in.
      if (lowest_timed_out_rank() == id_.rank) {
        report_diagnosis();
        return;
      }
      wait_for_diagnosis(kStandInWait);
    }
    // Rank 0 printed before it wrote the file; a moment more lets its line leave the pipe.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  } catch (const std::exception& e) {
    log::warn("flight recorder: {}", e.what());  // the job ends either way
  }
}

// Every rank's dump written since `fresh_since_ms` (this failure, not a watchdog dump from long
// before), or the grace is over: a rank that is dead never writes.
void FlightRecorder::wait_for_dumps(double fresh_since_ms, std::chrono::milliseconds grace) const {
  const auto deadline = SteadyClock::now() + grace;
  for (;;) {
    int fresh = 0;
    for (int r = 0; r < id_.world_size; r++)
      if (mtime_ms((fs::path(dir_) / fmt::format("rank-{}.json", r)).string()) >= fresh_since_ms)
        fresh++;
    if (fresh == id_.world_size || SteadyClock::now() >= deadline) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

bool FlightRecorder::wait_for_diagnosis(std::chrono::milliseconds wait) const {
  const std::string done = (fs::path(dir_) / "diagnosis.txt").string();
  const auto deadline = SteadyClock::now() + wait;
  while (mtime_ms(done) < 0 && SteadyClock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return mtime_ms(done) >= 0;
}

int FlightRecorder::lowest_timed_out_rank() const {
  for (int r = 0; r < id_.world_size; r++) {
    const std::string p = (fs::path(dir_) / fmt::format("rank-{}.json", r)).string();
    if (mtime_ms(p) < 0) continue;
    try {
      std::ifstream f(p);
      for (const auto& rec : rank_dump_from_json(nlohmann::json::parse(f)).records)
        if (rec.state == RecordState::Failed) return r;
    } catch (const std::exception&) {
      // unreadable: not a candidate
    }
  }
  return -1;
}

void FlightRecorder::report_diagnosis() const {
  std::vector<RankDump> dumps;
  for (int r = 0; r < id_.world_size; r++) {
    const std::string p = (fs::path(dir_) / fmt::format("rank-{}.json", r)).string();
    if (mtime_ms(p) < 0) continue;
    try {
      std::ifstream f(p);
      dumps.push_back(rank_dump_from_json(nlohmann::json::parse(f)));
    } catch (const std::exception& e) {
      log::warn("flight recorder: {}: {}", p, e.what());  // diagnosed as missing
    }
  }
  const Diagnosis d = diagnose(dumps, id_.world_size);
  fmt::print(stderr, "{}\n", d.line);
  std::fflush(stderr);
  write_atomically((fs::path(dir_) / "diagnosis.txt").string(),
                   d.line + "\n" + rank_table(dumps, id_.world_size));
}

// ---- the watchdog -----------------------------------------------------------------------------

Watchdog::Watchdog(std::shared_ptr<FlightRecorder> recorder, std::chrono::milliseconds timeout)
    : recorder_(std::move(recorder)), timeout_(timeout), thread_([this] { run(); }) {}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Watchdog::run() {
  // Look ten times per timeout (within 20..500 ms): a stall is dumped soon after it is one.
  const auto poll = std::clamp(timeout_ / 10, std::chrono::milliseconds(20),
                               std::chrono::milliseconds(500));
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, poll, [&] { return stop_; })) {
    lock.unlock();
    recorder_->dump_if_stalled(timeout_);
    lock.lock();
  }
}

// ---- attaching to the communicators -----------------------------------------------------------

FlightSession attach_flight_recorder(Communicator& world, Communicator& tp, Communicator& dp,
                                     const std::string& run_dir, int capacity,
                                     std::shared_ptr<TestFaultHooks> hooks) {
  FlightRecorder::Identity id{world.rank(), world.size(), process_identity().host,
                              (long)::getpid()};
  auto rec = std::make_shared<FlightRecorder>((fs::path(run_dir) / "flight").string(), capacity,
                                              std::move(id));
  // Only rank 0 cleans, before any rank can have dumped: build_groups, just done, is collective.
  if (world.rank() == 0) rec->remove_stale_files();
  for (Communicator* c : {&world, &tp, &dp}) {
    rec->add_group(c->name());
    c->set_recorder(rec);
    c->set_test_hooks(hooks);
  }
  // One process alone has nobody to wait on it: a slow step there is not a hang to report.
  if (world.size() == 1) return {rec, nullptr};
  return {rec, std::make_unique<Watchdog>(rec, world.timeout())};
}

}  // namespace cr
