#!/usr/bin/env bash
# Open MPI's remote-shell agent for the hosts of hosts.sh, in place of ssh:
#   mpirun --mca plm_rsh_agent tests/multinode/netns_rsh.sh ...
# Open MPI runs `AGENT HOST COMMAND...` to start its daemon (orted) on HOST, as it would run
# `ssh HOST COMMAND...`. This runs COMMAND through a shell on that host (in its namespaces) and,
# like ssh with `-o ServerAliveInterval=I -o ServerAliveCountMax=N` and sshd with the matching
# ClientAlive settings, ends the session when HOST has not answered for N x I seconds: the remote
# command gets SIGHUP (then SIGKILL) and the agent exits 255, which tells mpirun that it lost the
# daemon. Without that, mpirun and the unreachable host's daemon wait on each other for as long as
# TCP keeps retransmitting (~15 min), after the ranks themselves have ended.
# Env: CR_RSH_ALIVE_INTERVAL (default 1 s), CR_RSH_ALIVE_COUNT (default 3).
set -uo pipefail
host=${1:?usage: netns_rsh.sh HOST COMMAND...}
shift
here=$(dirname "$(readlink -f "$0")")
interval=${CR_RSH_ALIVE_INTERVAL:-1} count=${CR_RSH_ALIVE_COUNT:-3}
addr=$(getent hosts "$host" | awk '{print $1; exit}')
[[ -n $addr ]] || { echo "netns_rsh: cannot resolve $host" >&2; exit 255; }

# The remote session: its own process group, so that ending it reaches everything it started.
setsid bash "$here/hosts.sh" exec "$host" /bin/sh -c "$*" &
session=$!
misses=0
while kill -0 "$session" 2>/dev/null; do
  sleep "$interval"
  kill -0 "$session" 2>/dev/null || break
  # Alive: a TCP connection attempt to a closed port of HOST is refused (one round trip).
  out=$(timeout "$interval" bash -c "exec 3<>/dev/tcp/$addr/9" 2>&1) || true
  if [[ $out == *refused* ]]; then misses=0; else misses=$((misses + 1)); fi
  if ((misses >= count)); then
    echo "netns_rsh: $host ($addr) has not answered for $((misses * interval)) s: closing the session" >&2
    kill -HUP -- "-$session" 2>/dev/null
    sleep 2
    kill -KILL -- "-$session" 2>/dev/null
    exit 255
  fi
done
wait "$session"
