// Peer reachability probes and the rank map (see peer_probe.h).
#include "parallel/comm/peer_probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/common/error.h"

namespace cr {

namespace {

using Clock = std::chrono::steady_clock;

// IPv4 addresses of the interfaces that are up, loopback excluded.
std::vector<std::string> local_addresses() {
  std::vector<std::string> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) == 0) {
    for (ifaddrs* a = list; a; a = a->ifa_next) {
      if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET) continue;
      if (!(a->ifa_flags & IFF_UP) || (a->ifa_flags & IFF_LOOPBACK)) continue;
      char buf[INET_ADDRSTRLEN];
      const auto* sin = reinterpret_cast<const sockaddr_in*>(a->ifa_addr);
      if (::inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf)) out.emplace_back(buf);
    }
    ::freeifaddrs(list);
  }
  if (out.empty()) out.emplace_back("127.0.0.1");
  return out;
}

// A listening socket on every interface, port chosen by the kernel: {fd, port}, {-1, 0} on error.
std::pair<int, int> open_listener() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return {-1, 0};
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  // Nobody accepts: answered probes stay queued, so the queue is as long as the kernel allows.
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, SOMAXCONN) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    return {-1, 0};
  }
  return {fd, (int)ntohs(a.sin_port)};
}

// One connection attempt in flight.
struct Attempt {
  size_t target;  // index into the targets
  std::string addr;
  int fd = -1;
  int error = 0;  // 0 while pending or on success
  bool done = false, connected = false;
  bool local = false;  // failed here (no socket, bad address), not on the network
  double ms = 0;
};

// Starts a non-blocking connect; completes `at` at once when connect() itself decides.
void start_connect(Attempt& at, int port, Clock::time_point t0) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  if (::inet_pton(AF_INET, at.addr.c_str(), &a.sin_addr) != 1) {
    at.done = at.local = true;
    at.error = EINVAL;
    return;
  }
  at.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (at.fd < 0) {  // EMFILE, ENOBUFS, ...: this process, not the peer
    at.done = at.local = true;
    at.error = errno;
    return;
  }
  if (::connect(at.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    at.done = at.connected = true;
  } else if (errno != EINPROGRESS) {
    at.done = true;
    at.error = errno;
  }
  if (at.done) at.ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Polls every pending attempt until each is decided or `deadline` passes.
void run_attempts(std::vector<Attempt>& attempts, Clock::time_point t0, Clock::time_point deadline) {
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<Attempt*> who;
    for (auto& at : attempts)
      if (!at.done) {
        fds.push_back({at.fd, POLLOUT, 0});
        who.push_back(&at);
      }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (fds.empty() || left.count() <= 0) return;
    if (::poll(fds.data(), fds.size(), (int)left.count()) < 0 && errno != EINTR) return;
    for (size_t i = 0; i < fds.size(); i++) {
      if (!fds[i].revents) continue;
      Attempt& at = *who[i];
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(at.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      at.done = true;
      at.connected = err == 0;
      at.error = err;
      at.ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    }
  }
}

}  // namespace

std::shared_ptr<PeerDirectory> PeerDirectory::exchange(Communicator& world) {
  std::shared_ptr<PeerDirectory> d(new PeerDirectory());
  d->rank_ = world.rank();
  const auto [fd, port] = open_listener();
  d->listen_fd_ = fd;
  const nlohmann::json mine = {
      {"host", process_identity().host}, {"addrs", local_addresses()}, {"port", port}};
  for (const auto& bytes : world.all_gather_bytes(mine.dump(), "peer addresses")) {
    const auto j = nlohmann::json::parse(bytes);
    d->peers_.push_back({j.at("host").get<std::string>(),
                         j.at("addrs").get<std::vector<std::string>>(), j.at("port").get<int>()});
  }
  return d;
}

std::shared_ptr<PeerDirectory> PeerDirectory::from_endpoints(int rank, std::vector<PeerEndpoint> peers) {
  CR_CHECK(rank >= 0 && rank < (int)peers.size(), "rank {} outside {} endpoints", rank, peers.size());
  std::shared_ptr<PeerDirectory> d(new PeerDirectory());
  d->rank_ = rank;
  d->peers_ = std::move(peers);
  return d;
}

PeerDirectory::~PeerDirectory() {
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

std::vector<std::string> PeerDirectory::hosts() const {
  std::vector<std::string> h;
  for (const auto& p : peers_) h.push_back(p.host);
  return h;
}

// The addresses worth probing on `peer`: not this host's own, and not one that several hosts
// publish (docker0's 172.17.0.1 on every node: a connection there reaches the prober's own
// bridge and is refused at once, which would make a cut-off host look alive).
std::vector<std::string> PeerDirectory::probe_addresses(const PeerEndpoint& peer) const {
  const PeerEndpoint& me = peers_.at((size_t)rank_);
  std::map<std::string, std::set<std::string>> hosts_of;  // address -> hosts publishing it
  for (const auto& p : peers_)
    for (const auto& a : p.addrs) hosts_of[a].insert(p.host);
  std::vector<std::string> out;
  for (const auto& a : peer.addrs) {
    const bool mine = std::find(me.addrs.begin(), me.addrs.end(), a) != me.addrs.end();
    if (!mine && hosts_of[a].size() == 1) out.push_back(a);
  }
  return out;
}

std::vector<HostReach> PeerDirectory::probe(const std::vector<int>& ranks,
                                            std::chrono::milliseconds budget) const {
  const std::string& self = peers_.at((size_t)rank_).host;
  // One entry per other host, in order of its lowest rank in `ranks`.
  std::vector<HostReach> out;
  std::vector<int> sorted = ranks;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  for (int r : sorted) {
    if (r < 0 || r >= (int)peers_.size() || peers_[(size_t)r].host == self) continue;
    auto it = std::find_if(out.begin(), out.end(),
                           [&](const HostReach& h) { return h.host == peers_[(size_t)r].host; });
    if (it == out.end()) {
      out.push_back({peers_[(size_t)r].host, {}, true, false, ""});
      it = out.end() - 1;
    }
    it->ranks.push_back(r);
  }
  // Each host through one of its ranks, chosen by this rank's number: when every rank of a big
  // job probes at once, the connections spread over that host's listeners.
  std::vector<int> via;
  for (const auto& h : out) via.push_back(h.ranks[(size_t)rank_ % h.ranks.size()]);
  const auto t0 = Clock::now();
  std::vector<Attempt> attempts;
  for (size_t i = 0; i < out.size(); i++) {
    const PeerEndpoint& p = peers_[(size_t)via[i]];
    if (p.port <= 0) continue;
    for (const auto& a : probe_addresses(p)) attempts.push_back({i, a});
  }
  for (auto& at : attempts) start_connect(at, peers_[(size_t)via[at.target]].port, t0);
  run_attempts(attempts, t0, t0 + budget);
  for (size_t i = 0; i < out.size(); i++) {
    const PeerEndpoint& p = peers_[(size_t)via[i]];
    HostReach& h = out[i];
    std::vector<std::string> answered, silent;
    std::string local_error;
    for (const auto& at : attempts) {
      if (at.target != i) continue;
      const std::string ep = fmt::format("{}:{}", at.addr, p.port);
      if (at.connected)
        answered.push_back(fmt::format("{} answered in {:.1f} ms", ep, at.ms));
      else if (at.done && at.error == ECONNREFUSED)
        answered.push_back(fmt::format("{} refused: the host answers but rank {}'s process is gone", ep, via[i]));
      else if (at.local)
        local_error = fmt::format("{}: {}", ep, std::strerror(at.error));
      else
        silent.push_back(ep);
    }
    const std::string silent_list = [&] {
      std::string l;
      for (const auto& e : silent) l += (l.empty() ? "" : ", ") + e;
      return l;
    }();
    if (p.port <= 0) {
      h.detail = fmt::format("not probed (rank {} has no probe socket)", via[i]);
    } else if (answered.empty() && silent.empty()) {
      h.detail = local_error.empty()
                     ? fmt::format("not probed (no address of rank {} is its host's alone)", via[i])
                     : fmt::format("not probed ({})", local_error);
    } else if (answered.empty()) {
      h.reachable = false;
      h.detail = fmt::format("no answer from {} in {:.1f} s", silent_list, budget.count() / 1000.0);
    } else if (!silent.empty()) {
      h.partial = true;
      h.detail = fmt::format("{}; but no answer from {} in {:.1f} s (one of its networks is cut)",
                             answered.front(), silent_list, budget.count() / 1000.0);
    } else {
      h.detail = answered.front();
    }
  }
  for (auto& at : attempts)
    if (at.fd >= 0) ::close(at.fd);
  return out;
}

std::string rank_ranges(std::vector<int> ranks) {
  std::sort(ranks.begin(), ranks.end());
  ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
  std::string s;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) j++;
    s += (s.empty() ? "" : ",") +
         (j == i ? fmt::format("{}", ranks[i]) : fmt::format("{}-{}", ranks[i], ranks[j]));
    i = j + 1;
  }
  return s;
}

std::string describe_unreachable(const std::vector<HostReach>& reach) {
  std::string s;
  for (const auto& h : reach)
    if (!h.reachable || h.partial)
      s += (s.empty() ? "" : "; ") +
           fmt::format("{} (rank{} {}): {}", h.host, h.ranks.size() > 1 ? "s" : "",
                       rank_ranges(h.ranks), h.detail);
  return s;
}

RankMap describe_rank_map(const std::vector<std::string>& host_of_rank, int tp) {
  const int world = (int)host_of_rank.size();
  CR_CHECK(tp >= 1 && world % tp == 0, "rank map: tp {} does not divide {} ranks", tp, world);
  // Hosts in order of their lowest rank.
  std::vector<std::string> order;
  std::map<std::string, std::vector<int>> ranks_of;
  for (int r = 0; r < world; r++) {
    const auto& h = host_of_rank[(size_t)r];
    if (!ranks_of.count(h)) order.push_back(h);
    ranks_of[h].push_back(r);
  }
  RankMap m;
  m.line = "rank map:";
  for (const auto& h : order) m.line += fmt::format(" {} [{}]", h, rank_ranges(ranks_of[h]));
  int split_groups = 0;
  for (int g = 0; g < world / tp; g++) {
    std::vector<std::string> hosts;
    for (int r = g * tp; r < (g + 1) * tp; r++)
      if (std::find(hosts.begin(), hosts.end(), host_of_rank[(size_t)r]) == hosts.end())
        hosts.push_back(host_of_rank[(size_t)r]);
    if (hosts.size() < 2) continue;
    split_groups++;
    std::string hs;
    for (const auto& h : hosts) hs += (hs.empty() ? "" : ", ") + h;
    m.warnings.push_back(fmt::format(
        "tensor-parallel group [{}] spans hosts {}: its collectives (several per layer) cross "
        "the network; start the ranks node by node with parallel.tensor <= ranks per node",
        rank_ranges([&] {
          std::vector<int> v;
          for (int r = g * tp; r < (g + 1) * tp; r++) v.push_back(r);
          return v;
        }()),
        hs));
  }
  if (tp > 1)
    m.line += split_groups ? fmt::format("; {} of {} tp groups span hosts", split_groups, world / tp)
                           : std::string("; every tp group within one host");
  // The hosts each DP group touches (every DP group spans the same number when the map is
  // regular; report the largest).
  size_t dp_hosts = 0;
  for (int t = 0; t < tp; t++) {
    std::set<std::string> hs;
    for (int r = t; r < world; r += tp) hs.insert(host_of_rank[(size_t)r]);
    dp_hosts = std::max(dp_hosts, hs.size());
  }
  if (world / tp > 1)
    m.line += dp_hosts > 1 ? fmt::format("; dp groups across {} hosts", dp_hosts)
                           : std::string("; dp groups within one host");
  return m;
}

}  // namespace cr
