#!/usr/bin/env bash
# chainrule across nodes with plain Open MPI (no scheduler): RANKS_PER_NODE ranks on every node
# of HOSTFILE, each bound to THREADS cores for its OpenMP/OpenBLAS threads.
#
# Usage: deploy/mpirun/run_mpirun.sh HOSTFILE RANKS_PER_NODE CONFIG [--set key=value ...]
#   deploy/mpirun/run_mpirun.sh deploy/mpirun/hostfile.example 4 configs/default.yaml \
#       --set parallel.tensor=4 --set run.dir=runs/mpi-2x4
# Env: THREADS (default: this machine's cores / RANKS_PER_NODE), CHAINRULE (default
#      build/bin/chainrule), MPIRUN_ARGS (extra mpirun options, e.g. network selection below).
#
# Ranks = nodes x RANKS_PER_NODE, numbered node by node, so a tensor-parallel group (that many
# consecutive ranks, parallel.tensor <= RANKS_PER_NODE) stays inside a node; the data-parallel
# degree is ranks / parallel.tensor. Run it from the repository root on the first node; every
# node needs passwordless ssh, and the same paths for the binary, config, data and run dir.
# Network: Open MPI picks its transports itself; to pin them, e.g.
#   MPIRUN_ARGS="--mca btl_tcp_if_include eth0 --mca oob_tcp_if_include eth0"   # TCP on eth0
#   MPIRUN_ARGS="--mca pml ucx"                                                  # InfiniBand
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

args=(--hostfile "$hostfile" -np "$np"
  # per_node ranks per node, ranks numbered node by node, each on its own `threads` cores
  --map-by "ppr:$per_node:node:PE=$threads" --rank-by slot --bind-to core
  # the environment every rank needs: -x NAME forwards this shell's value to all nodes
  -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x PATH)
for v in $(compgen -e); do
  case $v in  # chainrule's own knobs, NCCL's for GPU runs, the library path if there is one
    CR_* | NCCL_* | LD_LIBRARY_PATH) args+=(-x "$v") ;;
  esac
done
[ "$(id -u)" -ne 0 ] || args+=(--allow-run-as-root)
# shellcheck disable=SC2206  # MPIRUN_ARGS is a list of options, split on purpose
args+=(${MPIRUN_ARGS:-})

echo "run_mpirun: $nodes node(s) x $per_node ranks x $threads threads = $np ranks"
set -x
exec mpirun "${args[@]}" "$CHAINRULE" train "$config" "$@"
