#!/usr/bin/env bash
# Several hosts on one machine, for the multi-node tests: each host is a Linux network namespace
# with its own interface (eth0), IPv4 address and hostname (a UTS namespace), cabled by a veth pair
# to a bridge that lives in a namespace of its own (the switch). No address, route or interface of
# the machine's own network namespace is touched, so the hosts' traffic stays among them.
#
#   hosts.sh up N              create hosts 1..N (idempotent: an existing host set is replaced)
#   hosts.sh down [N]          remove every host, the switch and their processes (idempotent; N,
#                              if given, is not needed: every host of the prefix goes)
#   hosts.sh exec HOST CMD...  run CMD on HOST (its network, hostname and /etc/hosts)
#   hosts.sh link HOST up|down plug or unplug HOST's cable (its port on the switch); up returns
#                              once HOST reaches another host again
#   hosts.sh list              the hosts: name, address
#   hosts.sh reachable HOST ADDR  exit 0 when HOST reaches ADDR (a TCP round trip) within 1 s
#
# Names: hosts are ${CR_HOSTS_PREFIX}1..N (default crnode1..), addresses ${CR_HOSTS_SUBNET}.(10+i)
# (default 10.213.0.11..) on a /24; the switch is ${CR_HOSTS_PREFIX}-switch. Each host resolves
# every host name through its own /etc/hosts (`ip netns exec` mounts /etc/netns/HOST/hosts over
# /etc/hosts), as nodes of a cluster do. The file system and the process table are shared, as on
# a cluster with a shared file system; `hosts.sh exec` is what ssh to that host would be.
#
# Writes only: network namespaces named as above, /etc/netns/<host>/ (created here, removed by
# down) and /run/chainrule-hosts/<prefix>/ (the hostname namespaces). Needs root (or CAP_SYS_ADMIN
# and CAP_NET_ADMIN); `up` exits 77 when namespaces cannot be created here, 1 when a tool is
# missing (iproute2, util-linux, coreutils) or the hosts do not reach each other, and removes
# whatever it made when it fails.
set -euo pipefail
export LC_ALL=C  # `reachable` reads bash's English "Connection refused"

PREFIX=${CR_HOSTS_PREFIX:-crnode}
SUBNET=${CR_HOSTS_SUBNET:-10.213.0}
SWITCH=$PREFIX-switch
STATE=/run/chainrule-hosts/$PREFIX

die() { echo "hosts.sh: $*" >&2; exit 1; }
[[ $PREFIX =~ ^[a-z][a-z0-9]{0,9}$ ]] || die "CR_HOSTS_PREFIX=$PREFIX: expected 1-10 lower-case letters or digits, starting with a letter"
[[ $SUBNET =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "CR_HOSTS_SUBNET=$SUBNET: expected three octets, e.g. 10.213.0"

# The hosts that exist now, by number.
existing_hosts() {
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${PREFIX}[0-9]+$" | sort -V || true
}

host_addr() { echo "$SUBNET.$((10 + ${1#"$PREFIX"}))"; }

valid_host() { [[ $1 =~ ^${PREFIX}[0-9]+$ ]] && ip netns list | awk '{print $1}' | grep -qx "$1"; }

# Every process whose network namespace is NS: TERM, then KILL what is left after 3 s.
kill_ns_processes() {
  local ns=$1 pids i
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  [[ -n $pids ]] || return 0
  kill -TERM $pids 2>/dev/null || true
  for ((i = 0; i < 30; i++)); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [[ -z $pids ]] && return 0
    sleep 0.1
  done
  kill -KILL $pids 2>/dev/null || true
  sleep 0.2
}

down() {
  local ns
  for ns in $(existing_hosts) $(ip netns list 2>/dev/null | awk '{print $1}' | grep -x "$SWITCH" || true); do
    kill_ns_processes "$ns"
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/${ns:?}"
  done
  if [[ -d $STATE ]]; then
    local f
    for f in "$STATE"/*.uts; do
      [[ -e $f ]] || continue
      umount "$f" 2>/dev/null || true
    done
    rm -rf "${STATE:?}"
  fi
}

up() {
  local n=$1 i
  [[ $n =~ ^[0-9]+$ && $n -ge 1 && $n -le 200 ]] || die "up $n: expected a host count 1..200"
  local tool
  for tool in ip unshare nsenter timeout setsid; do  # iproute2, util-linux, coreutils
    command -v "$tool" >/dev/null || die "$tool not found: install iproute2 util-linux coreutils (deploy/install_deps.sh)"
  done
  down  # whatever is left of an earlier set, complete or not
  ip netns add "$SWITCH" 2>/dev/null || { echo "hosts.sh: cannot create network namespaces here (needs root / CAP_SYS_ADMIN)" >&2; exit 77; }
  trap 'echo "hosts.sh: up failed; removing what it made" >&2; down' ERR
  mkdir -p "$STATE"
  ip -n "$SWITCH" link add br0 type bridge
  ip -n "$SWITCH" link set br0 up
  ip -n "$SWITCH" link set lo up
  local hosts_file=$STATE/hosts
  {
    echo "127.0.0.1 localhost"
    for ((i = 1; i <= n; i++)); do echo "$SUBNET.$((10 + i)) $PREFIX$i"; done
  } >"$hosts_file"
  for ((i = 1; i <= n; i++)); do
    local h=$PREFIX$i port=p-$PREFIX$i
    ip netns add "$h"
    # The cable: eth0 on the host, its port on the switch's bridge.
    ip link add "$port" netns "$SWITCH" type veth peer name eth0 netns "$h"
    ip -n "$SWITCH" link set "$port" master br0 up
    ip -n "$h" link set lo up
    ip -n "$h" addr add "$SUBNET.$((10 + i))/24" dev eth0
    ip -n "$h" link set eth0 up
    mkdir -p "/etc/netns/$h"
    cp "$hosts_file" "/etc/netns/$h/hosts"
    # The hostname: a UTS namespace kept alive by a bind mount, entered by `exec`.
    : >"$STATE/$h.uts"
    unshare --uts="$STATE/$h.uts" hostname "$h"
  done
  # The bridge forwards once its ports are up; wait until host 1 reaches the last host.
  for ((i = 0; i < 100; i++)); do
    reachable "${PREFIX}1" "$SUBNET.$((10 + n))" && return 0
    sleep 0.1
  done
  ip -n "$SWITCH" -br link >&2 || true
  ip -n "${PREFIX}1" -br addr >&2 || true
  down
  die "hosts were up but ${PREFIX}1 cannot reach $PREFIX$n ($SUBNET.$((10 + n))) after 10 s"
}

# reachable HOST ADDR: a TCP connection from HOST to port 9 of ADDR is refused (nothing listens
# there), which takes a round trip; no answer within 1 s is unreachable. No ping needed.
reachable() {
  local out
  out=$(ip netns exec "$1" timeout 1 bash -c 'exec 3<>"/dev/tcp/$1/9"' _ "$2" 2>&1) || true
  [[ $out == *refused* ]]
}

cmd=${1:-}
shift || true
case $cmd in
  up) up "${1:?usage: hosts.sh up N}" ;;
  down)
    [[ -z ${1:-} || ${1:-} =~ ^[0-9]+$ ]] || die "down $1: expected nothing or a host count"
    down
    ;;
  exec)
    h=${1:?usage: hosts.sh exec HOST CMD...}
    shift
    valid_host "$h" || die "exec: no host '$h' (hosts: $(existing_hosts | tr '\n' ' '))"
    [[ $# -ge 1 ]] || die "exec $h: no command"
    exec ip netns exec "$h" nsenter --uts="$STATE/$h.uts" -- "$@"
    ;;
  link)
    h=${1:?usage: hosts.sh link HOST up|down}
    state=${2:?usage: hosts.sh link HOST up|down}
    valid_host "$h" || die "link: no host '$h'"
    [[ $state == up || $state == down ]] || die "link $h $state: expected up or down"
    ip -n "$SWITCH" link set "p-$h" "$state"
    if [[ $state == up ]]; then  # back when the bridge forwards again: HOST reaches another host
      other=$(existing_hosts | grep -vx "$h" | head -1 || true)
      [[ -n $other ]] || exit 0
      for ((i = 0; i < 50; i++)); do
        reachable "$h" "$(host_addr "$other")" && exit 0
        sleep 0.1
      done
      die "link $h up: $h cannot reach $other after 5 s"
    fi
    ;;
  reachable)
    h=${1:?usage: hosts.sh reachable HOST ADDRESS}
    valid_host "$h" || die "reachable: no host '$h'"
    reachable "$h" "${2:?usage: hosts.sh reachable HOST ADDRESS}"
    ;;
  list) for h in $(existing_hosts); do echo "$h $(host_addr "$h")"; done ;;
  *)
    echo "usage: hosts.sh up N | down [N] | exec HOST CMD... | link HOST up|down | list | reachable HOST ADDR" >&2
    exit 2
    ;;
esac
