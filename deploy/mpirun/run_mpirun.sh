#!/usr/bin/env bash
# chainrule across nodes with plain Open MPI (no scheduler): RANKS_PER_NODE ranks on every node
# of HOSTFILE, each bound to THREADS cores for its OpenMP/OpenBLAS threads.
#
# Usage: deploy/mpirun/run_mpirun.sh HOSTFILE RANKS_PER_NODE CONFIG [--set key=value ...]
#   deploy/mpirun/run_mpirun.sh deploy/mpirun/hostfile.example 4 configs/default.yaml \
#       --set parallel.tensor=4 --set run.dir=runs/mpi-2x4
# Env: THREADS (default: this machine's cores / RANKS_PER_NODE), CHAINRULE (default
#      build/bin/chainrule), NET_IF (the interface(s) the ranks and Open MPI's daemons talk
#      over, e.g. eth0 or ib0 or 10.0.0.0/16: pins btl_tcp_if_include and oob_tcp_if_include),
#      LOST_NODE_S (default 60: a node that stops answering for this long ends the job, see
#      below), RSH_ARGS (ssh options; default: $OMPI_MCA_plm_rsh_args, then "-o BatchMode=yes"
#      and the ServerAlive settings LOST_NODE_S implies; ssh options set in a site's
#      openmpi-mca-params.conf are replaced: repeat them here), MPIRUN_ARGS (any other mpirun
#      options).
#
# Ranks = nodes x RANKS_PER_NODE, numbered node by node, so a tensor-parallel group (that many
# consecutive ranks, parallel.tensor <= RANKS_PER_NODE) stays inside a node; the data-parallel
# degree is ranks / parallel.tensor. Run it from the repository root on the first node; every
# node needs passwordless ssh, and the same paths for the binary, config, data and run dir.
# Network: Open MPI uses every interface that is up unless told otherwise; NET_IF=eth0 keeps its
# TCP traffic (ranks and daemons) on eth0, e.g. off a docker0 or a management network that the
# other nodes cannot reach. MPIRUN_ARGS="--mca pml ucx" for InfiniBand.
# A node lost mid-run (a cable, a switch port, a crash): every rank ends by itself after
# parallel.timeout_s, naming the collective and the host it cannot reach (+ ~10 s to gather the
# diagnosis). mpirun and Open MPI's daemons, though, notice a lost peer only through their TCP
# connections; left alone they wait as long as TCP retransmits (~15 min) and mpirun never
# returns. LOST_NODE_S bounds that: TCP keepalive on the daemons' connections
# (oob_tcp_keepalive_*) and ssh's ServerAlive probes each give up on a silent node after about
# LOST_NODE_S seconds, and mpirun ends the job. With parallel.timeout_s + 10 < LOST_NODE_S the
# ranks' own diagnosis comes first; otherwise Open MPI's "lost communication with a remote
# daemon" does.
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 HOSTFILE RANKS_PER_NODE CONFIG [--set key=value ...]" >&2
  exit 2
fi
hostfile=$1 per_node=$2 config=$3
shift 3
CHAINRULE=${CHAINRULE:-build/bin/chainrule}
[ -r "$hostfile" ] || { echo "$0: cannot read hostfile $hostfile" >&2; exit 2; }
nodes=$(grep -cEv '^[[:space:]]*(#|$)' "$hostfile" || true)
[ "$nodes" -ge 1 ] || { echo "$0: no nodes in $hostfile" >&2; exit 2; }
threads=${THREADS:-$(($(nproc) / per_node))}
[ "$threads" -ge 1 ] || threads=1
np=$((nodes * per_node))
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads

args=(--hostfile "$hostfile" -np "$np")
if [ $((per_node * threads)) -le "$(nproc)" ]; then
  # per_node ranks per node, ranks numbered node by node, each on its own `threads` cores
  args+=(--map-by "ppr:$per_node:node:PE=$threads" --rank-by slot --bind-to core)
else  # more ranks x threads than this node's cores (a dev box): correct, but ranks share cores
  echo "run_mpirun: note: $per_node ranks x $threads threads > $(nproc) cores: not binding"
  args+=(--map-by "ppr:$per_node:node" --rank-by slot --bind-to none --oversubscribe)
fi
args+=(
  # the environment every rank needs: -x NAME forwards this shell's value to all nodes
  -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x PATH)
for v in $(compgen -e); do
  case $v in  # chainrule's own knobs, NCCL's for GPU runs, the library path if there is one
    CR_* | NCCL_* | LD_LIBRARY_PATH) args+=(-x "$v") ;;
  esac
done
[ "$(id -u)" -ne 0 ] || args+=(--allow-run-as-root)
if [ -n "${NET_IF:-}" ]; then
  args+=(--mca btl_tcp_if_include "$NET_IF" --mca oob_tcp_if_include "$NET_IF")
fi
lost=${LOST_NODE_S:-60}
case $lost in '' | *[!0-9]*) echo "$0: LOST_NODE_S=$lost: expected whole seconds >= 6" >&2; exit 2 ;; esac
[ "$lost" -ge 6 ] || { echo "$0: LOST_NODE_S=$lost: expected whole seconds >= 6" >&2; exit 2; }
alive=$((lost / 6))  # probe interval: 6 unanswered probes (after lost/2 s idle for keepalive)
args+=(--mca oob_tcp_keepalive_time $((lost / 2)) --mca oob_tcp_keepalive_intvl $((lost / 12 > 0 ? lost / 12 : 1))
  --mca oob_tcp_keepalive_probes 6
  # ssh's own probes, after any options the site gives ssh already (OMPI_MCA_plm_rsh_args)
  --mca plm_rsh_args "${RSH_ARGS:-${OMPI_MCA_plm_rsh_args:+$OMPI_MCA_plm_rsh_args }-o BatchMode=yes -o ServerAliveInterval=$alive -o ServerAliveCountMax=6}")
# shellcheck disable=SC2206  # MPIRUN_ARGS is a list of options, split on purpose
args+=(${MPIRUN_ARGS:-})

# mpirun stays after its ranks when a node is lost with messages in flight to its daemon (Open
# MPI 4.1 waits on TCP retransmission, up to minutes). A watcher beside it ends it once this
# node's ranks have been gone for LOST_NODE_S: the job is over here, and its exit status stays
# non-zero. Only when this node ran ranks (an mpirun on a login node is left alone), and never
# while they run. mpirun itself replaces this script (exec), so signals (Ctrl-C, SIGTERM,
# SIGUSR1 for a checkpoint) reach it exactly as they would reach a bare mpirun.
ranks_here() {  # mpirun's children that run $CHAINRULE: this node's ranks
  local a
  while read -r a; do [[ $a == "$CHAINRULE train"* ]] && return 0; done < <(ps --ppid "$1" -o args= 2>/dev/null)
  return 1
}
watch_mpirun() {
  local mpid=$1 seen=0 gone_since=0
  while kill -0 "$mpid" 2>/dev/null; do
    sleep 1
    if ranks_here "$mpid"; then
      seen=1 gone_since=$SECONDS
    elif [ "$seen" = 1 ] && [ $((SECONDS - gone_since)) -ge "$lost" ]; then
      echo "run_mpirun: this node's ranks ended $lost s ago and mpirun is still waiting, on a" \
        "node it cannot reach: stopping it" >&2
      kill -TERM "$mpid" 2>/dev/null || true
      for _ in 1 2 3 4 5; do kill -0 "$mpid" 2>/dev/null && sleep 1; done
      kill -KILL "$mpid" 2>/dev/null || true
      return 0
    fi
  done
}
watch_mpirun $$ </dev/null >/dev/null &

echo "run_mpirun: $nodes node(s) x $per_node ranks x $threads threads = $np ranks"
echo "+ mpirun ${args[*]} $CHAINRULE train $config $*"
exec mpirun "${args[@]}" "$CHAINRULE" train "$config" "$@"
