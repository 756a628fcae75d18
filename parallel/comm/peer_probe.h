// Which hosts of a job this rank can still reach: names the unreachable host when a collective
// times out, and gives the start-up log its rank map.
//
// How: at start-up every rank opens a listening TCP socket on all its interfaces (an ephemeral
// port; nobody ever accepts: the kernel completes a handshake into the backlog by itself, so a
// rank stuck in compute or in a collective still answers) and the ranks exchange, over the world
// communicator, (hostname, IPv4 addresses, port). When a collective times out, the rank tries a
// TCP connection to one rank of every other host of that collective's group, all at once, within
// a bounded time:
//   - the handshake completes:            the host is reachable (a slow or stuck rank, not the
//                                          network);
//   - refused:                             the host answers but that rank's process is gone;
//   - no answer (or unreachable network):  the host is unreachable from here;
//   - some addresses answer, others not:   partly reachable (one of its networks is cut).
// Ranks on this rank's own host are never probed, nor addresses that are this host's own or that
// several hosts publish (docker0's 172.17.0.1 would reach the prober's own bridge). A host is
// probed through one of its ranks chosen by the prober's rank, so that a big job's probes spread
// over its listeners. Only IPv4 addresses of interfaces that are up and not loopback are
// published (127.0.0.1 when there is none). Not handled: hosts that share a hostname are one
// host here; a firewall that drops connections to the probe port makes every host look cut.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "parallel/comm/communicator.h"

namespace cr {

struct PeerEndpoint {
  std::string host;                // gethostname() of the rank
  std::vector<std::string> addrs;  // dotted IPv4 addresses
  int port = 0;                    // its probe listener; 0: none could be opened
};

// The outcome for one other host of a group.
struct HostReach {
  std::string host;
  std::vector<int> ranks;      // the group's world ranks on that host
  bool reachable = true;       // some address of it answered (or nothing could be probed)
  bool partial = false;        // some answered, others did not: one of its networks is cut
  std::string detail;          // "no answer from 10.0.0.2:40123 in 1.5 s", "... answered in 0.2 ms"
};

class PeerDirectory {
 public:
  // Collective over `world` (one all_gather_bytes). Never throws for a socket that cannot be
  // opened: that rank publishes port 0 and is reported as "not probed".
  static std::shared_ptr<PeerDirectory> exchange(Communicator& world);
  // A directory of given endpoints, seen from `rank`, with no listener of its own (tests).
  static std::shared_ptr<PeerDirectory> from_endpoints(int rank, std::vector<PeerEndpoint> peers);
  ~PeerDirectory();
  PeerDirectory(const PeerDirectory&) = delete;
  PeerDirectory& operator=(const PeerDirectory&) = delete;

  int rank() const { return rank_; }
  const std::vector<PeerEndpoint>& endpoints() const { return peers_; }  // by world rank
  std::vector<std::string> hosts() const;                                // by world rank

  // Probes the hosts of `ranks` (world ranks) other than this rank's host, in parallel; returns
  // within `budget` (plus a few ms). One entry per other host, in order of its lowest rank.
  std::vector<HostReach> probe(const std::vector<int>& ranks,
                               std::chrono::milliseconds budget) const;

 private:
  std::vector<std::string> probe_addresses(const PeerEndpoint& peer) const;
  PeerDirectory() = default;
  int rank_ = 0;
  int listen_fd_ = -1;
  std::vector<PeerEndpoint> peers_;
};

// "crnode2 (ranks 2,3): no answer from 10.213.0.12:40123 in 1.5 s" for each unreachable or
// partly reachable host, joined by "; ". Empty when every probed host answered.
std::string describe_unreachable(const std::vector<HostReach>& reach);

// The job's placement for the start-up log (pure; unit-tested), from each world rank's host and
// parallel.tensor (TP groups are runs of `tp` consecutive ranks, see rank_grid.h):
//   line      "rank map: crnode1 [0-1] crnode2 [2-3]; every tp group within one host; dp groups
//             across 2 hosts"
//   warnings  one per TP group that spans hosts (its several collectives per layer would cross
//             the network).
struct RankMap {
  std::string line;
  std::vector<std::string> warnings;
};
RankMap describe_rank_map(const std::vector<std::string>& host_of_rank, int tp);

// "0-3,8,10-11": sorted ranks with runs collapsed.
std::string rank_ranges(std::vector<int> ranks);

}  // namespace cr
