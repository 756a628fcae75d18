#!/usr/bin/env bash
# Open MPI's remote-shell agent for the hosts of hosts.sh, in place of ssh:
#   mpirun --mca plm_rsh_agent tests/multinode/netns_rsh.sh ...
# Open MPI runs `AGENT [plm_rsh_args] HOST COMMAND...` to start its daemon (orted) on HOST, as it
# would run `ssh [options] HOST COMMAND...`. This runs COMMAND through a shell on that host (in
# its namespaces) and, like ssh with `-o ServerAliveInterval=I -o ServerAliveCountMax=N` (and
# sshd with the matching ClientAlive settings), ends the session when HOST has not answered for
# I x N seconds: the remote command gets SIGHUP (then SIGKILL) and the agent exits 255, which
# tells mpirun that it lost the daemon. Without that, mpirun and the unreachable host's daemon
# wait on each other for as long as TCP retransmits (~15 min), after the ranks have ended.
# Options: ssh's `-o ServerAliveInterval=I` (default 1) and `-o ServerAliveCountMax=N` (default
# 3); other `-o` options (BatchMode, ...) are accepted and ignored.
set -uo pipefail
export LC_ALL=C  # the liveness check reads bash's English "Connection refused"
interval=1 count=3
while [[ ${1:-} == -o ]]; do
  case ${2:-} in
    ServerAliveInterval=*) interval=${2#*=} ;;
    ServerAliveCountMax=*) count=${2#*=} ;;
  esac
  shift 2
done
host=${1:?usage: netns_rsh.sh [-o Option=value ...] HOST COMMAND...}
shift
here=$(dirname "$(readlink -f "$0")")
addr=$(getent hosts "$host" | awk '{print $1; exit}')
[[ -n $addr ]] || { echo "netns_rsh: cannot resolve $host" >&2; exit 255; }

# The remote session: its own process group, so that ending it reaches everything it started.
setsid bash "$here/hosts.sh" exec "$host" /bin/sh -c "$*" &
session=$!
# Killed or hung up (mpirun ending, Ctrl-C): the session ends with the agent, as an ssh channel's.
end_session() {
  kill -HUP -- "-$session" 2>/dev/null
  sleep 1
  kill -KILL -- "-$session" 2>/dev/null
  exit 255
}
trap end_session TERM INT HUP
last_answer=$SECONDS
while kill -0 "$session" 2>/dev/null; do
  sleep "$interval"
  kill -0 "$session" 2>/dev/null || break
  # Alive: a TCP connection attempt to a closed port of HOST is refused (one round trip).
  out=$(timeout "$interval" bash -c 'exec 3<>"/dev/tcp/$1/9"' _ "$addr" 2>&1) || true
  [[ $out == *refused* ]] && last_answer=$SECONDS
  if ((SECONDS - last_answer >= interval * count)); then
    echo "netns_rsh: $host ($addr) has not answered for $((SECONDS - last_answer)) s: closing the session" >&2
    end_session
  fi
done
wait "$session"
