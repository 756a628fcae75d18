#!/usr/bin/env bash
# chainrule under Slurm across two hosts: deploy/slurm/cpu.sbatch submitted on the login node
# (host 1) with `sbatch --nodes=2 --ntasks-per-node=2` to a private Slurm cluster whose slurmd run
# in the hosts' own network namespaces (hosts.sh, slurm_hosts.sh). srun --mpi=pmix starts tp=2 x
# dp=2 with ranks 0,1 on host 1 and 2,3 on host 2; Open MPI's TCP crosses the hosts' eth0.
#
#   1. The job succeeds, its ranks sit where block distribution puts them, and its losses equal
#      a single-host run of the same layout (mpirun -np 4 on host 1) bit for bit.
#   2. Pre-emption: `scancel --batch --signal=USR1` mid-run makes the job save a checkpoint and
#      end with exit 0; resubmitting resumes from it, and every loss before and after equals the
#      uninterrupted single-host run bit for bit.
#
# Each host also gets a docker0-like bridge with the same address (172.17.0.1/16) on every
# host, as container hosts have. Open MPI's TCP transport would try that address for peers on
# other hosts and hang in start-up; the jobs pass only because the submission pins it to eth0
# (OMPI_MCA_btl_tcp_if_include, which sbatch's --export=ALL hands to every rank).
#
# Usage: slurm.sh CHAINRULE SRC_DIR. Env: CR_HOSTS_PREFIX / CR_HOSTS_SUBNET (hosts.sh; default
# crnode / 10.213.0), CR_SLURM_WAIT_S bounds each job (default 60 s), CR_KEEP_TMP keeps the
# temp dir. Exit 77 when network namespaces or the Slurm daemons cannot run here; missing Slurm
# packages FAIL. The hosts, the cluster and every process in them are removed on any exit; a
# detached watchdog does it when this script is killed outright (SIGKILL from a test timeout),
# and a later run sweeps what is left before it starts.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../dist/ckpt_lib.sh" # dist_init, losses, same_losses, fail, note
source "$HERE/../dist/slurm_cluster.sh" # slurm_logs
BIN_ARG=$1 SRC_ARG=$2

export CR_HOSTS_PREFIX=${CR_HOSTS_PREFIX:-crnode} CR_HOSTS_SUBNET=${CR_HOSTS_SUBNET:-10.213.0}
# The prefix names a directory that is removed at the end: hosts.sh's rule, checked before use.
[[ $CR_HOSTS_PREFIX =~ ^[a-z][a-z0-9]{0,9}$ ]] || { echo "CR_HOSTS_PREFIX=$CR_HOSTS_PREFIX: expected 1-10 lower-case letters or digits" >&2; exit 2; }
HOSTS=$HERE/hosts.sh
SLURM_HOSTS=$HERE/slurm_hosts.sh
H1=${CR_HOSTS_PREFIX}1 H2=${CR_HOSTS_PREFIX}2
CLUSTER=/tmp/crslurm-$CR_HOSTS_PREFIX # short: munged's socket path must fit a sockaddr_un
WATCH=$CLUSTER.watchdog              # pid of the watchdog of the run that holds these hosts
TP=2 NP=4

# Whatever Slurm job this test itself runs under must not leak into its submissions.
for v in $(compgen -e); do
  case $v in SLURM_* | SBATCH_* | SRUN_* | SALLOC_*) unset "$v" ;; esac
done

stop_watchdog() {
  local p
  [[ -s $WATCH ]] || return 0
  p=$(cat "$WATCH")
  if tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null | grep -qx 'cr-slurm-watchdog'; then
    kill "$p" 2>/dev/null || true
  fi
  rm -f "$WATCH"
}

# The watchdog: a process of its own session, reparented away from this script (a test runner
# that kills our process tree does not find it), that waits for this script to end and then
# removes the cluster, the hosts and the temp dir (a zombie counts as ended: its parent may not
# reap it soon). The normal exit path stops it first.
start_watchdog() {
  local t0
  t0=$(cut -d' ' -f22 "/proc/$$/stat")
  (
    setsid bash -c 'cd /
      alive() { local s; s=$(cut -d" " -f3,22 "/proc/$1/stat" 2>/dev/null); [[ $s == [!Z]" $2" ]]; }
      while alive "$1" "$2"; do sleep 0.5; done
      [[ $(cat "$6.watchdog" 2>/dev/null) == "$$" ]] || exit 0
      bash "$4" stop "$6"; bash "$3" down; rm -rf "$6" "$5" "$6.watchdog"' \
      cr-slurm-watchdog "$$" "$t0" "$HOSTS" "$SLURM_HOSTS" "$T" "$CLUSTER" </dev/null >/dev/null 2>&1 &
    echo $! >"$WATCH"
  )
}

# Leftovers of an earlier run that was killed: its watchdog (before it could act), its cluster's
# processes; `hosts.sh up` below replaces the hosts and ends every process still in them.
stop_watchdog
bash "$SLURM_HOSTS" stop "$CLUSTER" 2>/dev/null || true

cleanup() {
  local rc=$?
  set +e
  stop_watchdog
  bash "$SLURM_HOSTS" stop "$CLUSTER" 2>/dev/null
  bash "$HOSTS" down
  rm -rf "$CLUSTER"
  if [[ -n ${CR_KEEP_TMP:-} ]]; then echo "kept $T"; else rm -rf "$T"; fi
  exit "$rc"
}

start=$(date +%s%N)
ms() { echo $((($(date +%s%N) - start) / 1000000)); }

dist_init "$BIN_ARG" "$SRC_ARG" 4000 # $T with data/, OMP_NUM_THREADS=1, Open MPI as root
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
CFG=$SRC/tests/dist/dist.yaml

rc=0
bash "$HOSTS" up 2 || rc=$?
[[ $rc == 77 ]] && { echo "SKIP: network namespaces cannot be created here"; exit 77; }
[[ $rc == 0 ]] || fail "hosts.sh up 2 failed ($rc)"
start_watchdog
on() { bash "$HOSTS" exec "$@"; }
for h in "$H1" "$H2"; do
  on "$h" sh -c 'ip link add docker0 type bridge && ip addr add 172.17.0.1/16 dev docker0 &&
    ip link set docker0 up' || fail "$h: cannot add the decoy interface docker0"
done
rc=0
bash "$SLURM_HOSTS" start "$CLUSTER" || rc=$?
case $rc in
  0) ;;
  2) fail "Slurm is not installed: run deploy/install_deps.sh (slurmctld slurmd slurm-client munge libpmix-dev)" ;;
  77) echo "SKIP: the Slurm daemons are installed but cannot run in the hosts here (logs above)"; exit 77 ;;
  *) fail "slurm_hosts.sh start: status $rc" ;;
esac
eval "$(bash "$SLURM_HOSTS" env "$CLUSTER")" # SLURM_CONF, for every command on the hosts
note "hosts $H1 $H2 and their Slurm cluster up ($(ms) ms)"
on "$H1" srun --mpi=list 2>&1 | grep -qw pmix || fail "this Slurm has no mpi/pmix plugin"

# The one network setting the ranks need here (see the header); exported, so sbatch passes it on.
export OMPI_MCA_btl_tcp_if_include=eth0

daemon_logs() { slurm_logs "$CLUSTER" '*.log' 20; }

# submit NAME ARGS...: sbatch on the login node, from $T (the job's SLURM_SUBMIT_DIR); sets JOB.
submit() {
  local name=$1 out
  shift
  out=$(on "$H1" env CHAINRULE="$BIN" sbatch --parsable --job-name="$name" --nodes=2 \
    --ntasks-per-node=2 --cpus-per-task=1 --time=5 --output="$T/slurm-%j.out" \
    "$SRC/deploy/slurm/cpu.sbatch" "$CFG" --set parallel.tensor=$TP "$@" 2>&1) ||
    fail "sbatch rejected $name: $out"
  JOB=${out%%;*}
}

# job_ok: job $JOB has ended (at most CR_SLURM_WAIT_S) COMPLETED with exit code 0:0, and its
# batch script reported a clean finish; sets OUT (its log). Slurm keeps the ended job's record
# for MinJobAge (600 s), so `scontrol show job` tells its state (no accounting here for sacct).
job_ok() {
  local wait_s=${CR_SLURM_WAIT_S:-60} deadline info state code
  deadline=$(($(date +%s) + wait_s))
  OUT=$T/slurm-$JOB.out
  while :; do
    info=$(on "$H1" scontrol show job "$JOB" -o 2>&1) || fail "scontrol show job $JOB: $info"
    state=$(sed -n 's/.* JobState=\([A-Z_]*\).*/\1/p' <<<"$info")
    case $state in
      PENDING | CONFIGURING | RUNNING | COMPLETING | SUSPENDED | "") ;;
      *) break ;;
    esac
    if (($(date +%s) >= deadline)); then
      echo "$info"; cat "$OUT" 2>/dev/null; daemon_logs
      fail "job $JOB still $state after $wait_s s"
    fi
    sleep 0.2
  done
  code=$(sed -n 's/.* ExitCode=\([0-9:]*\).*/\1/p' <<<"$info")
  if [[ $state != COMPLETED || $code != 0:0 ]] ||
    ! grep -q "^chainrule-slurm: job $JOB finished: exit status 0$" "$OUT"; then
    echo "$info"; cat "$OUT" 2>/dev/null; daemon_logs
    fail "job $JOB ended $state, exit code $code (expected COMPLETED 0:0 and a clean finish)"
  fi
}

# single_host RUN_DIR ARGS...: the same layout under mpirun -np 4, all on host 1.
single_host() {
  local dir=$1
  shift
  on "$H1" timeout 120 mpirun -np $NP --bind-to none -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS \
    "$BIN" train "$CFG" --set parallel.tensor=$TP --set run.dir="$dir" "$@" >"$dir.log" 2>&1 ||
    { cat "$dir.log"; fail "the single-host mpirun -np $NP run ($dir) failed"; }
  grep -q "launched as $NP ranks under MPI .*rank 0 on $H1:" "$dir.log" ||
    { cat "$dir.log"; fail "$dir: not $NP MPI ranks on $H1"; }
}

# --- 1. TP 2 x DP 2 across the hosts equals the same layout on one host ---------------------
submit cr-mn-slurm --set run.dir=run_slurm
job_ok
grep -q "launched as $NP ranks under MPI .*rank 0 on $H1: .*SLURM_JOB_ID=$JOB SLURM_PROCID=0 .*SLURM_NTASKS=$NP" "$OUT" ||
  { cat "$OUT"; fail "job $JOB: rank 0 did not report $NP ranks launched by srun, itself on $H1"; }
grep -q "^chainrule-slurm: Open MPI TCP between ranks on eth0 " "$OUT" ||
  { cat "$OUT"; fail "job $JOB: the batch script did not get OMPI_MCA_btl_tcp_if_include=eth0"; }
grep -q "layout: $NP ranks = tensor $TP x data $((NP / TP))" "$OUT" ||
  { cat "$OUT"; fail "job $JOB: not the tp=$TP x dp=$((NP / TP)) layout"; }
map="rank map: $H1 [0-1] $H2 [2-3]; every tp group within one host; dp groups across 2 hosts"
grep -qF "$map" "$OUT" || { cat "$OUT"; fail "job $JOB: expected '$map'"; }
note "sbatch --nodes=2 --ntasks-per-node=2: job $JOB COMPLETED 0:0 ($(ms) ms)"
single_host run_single
same_losses run_single run_slurm 1 20 "2 hosts under Slurm vs 1 host under mpirun"
note "steps 1..20 bit-identical to mpirun -np $NP on $H1 ($(ms) ms)"

# --- 2. Pre-emption: USR1 to the batch script, a checkpoint, exit 0, and a bit-exact resume -----
# max_steps stays far away (the LR schedule is the same in every run of this part); the bound
# only keeps a job whose signal got lost from running for long.
LONG=(--set train.max_steps=100000 --set run.log_every=100000)
submit cr-mn-preempt "${LONG[@]}" --set run.dir=run_pre --set checkpoint.dir=ck --set train.stop_after_step=3000
for _ in $(seq 300); do
  [[ -f run_pre/metrics.jsonl && $(grep -c '"type":"train"' run_pre/metrics.jsonl) -ge 5 ]] && break
  sleep 0.1
done

# Where the ranks run, from the processes themselves: srun's rank (SLURM_PROCID, which PMIx makes
# the MPI rank) and the host (the network namespace). Block distribution: 0,1 on host 1, 2,3 on 2.
placement="" BIN_REAL=$(readlink -f "$BIN")
for p in /proc/[0-9]*; do
  [[ $(readlink "$p/exe" 2>/dev/null) == "$BIN_REAL" ]] || continue
  env_=$(tr '\0' '\n' <"$p/environ" 2>/dev/null) || continue
  grep -qx "SLURM_JOB_ID=$JOB" <<<"$env_" || continue
  placement+="$(sed -n 's/^SLURM_PROCID=//p' <<<"$env_"):$(ip netns identify "${p#/proc/}") "
done
placement=$(tr ' ' '\n' <<<"$placement" | sort -n | xargs)
[[ $placement == "0:$H1 1:$H1 2:$H2 3:$H2" ]] ||
  fail "job $JOB: ranks placed as '$placement' (rank:host), expected 0,1 on $H1 and 2,3 on $H2"
note "job $JOB: ranks by host: $placement"

on "$H1" scancel --batch --signal=USR1 "$JOB" || fail "scancel --batch --signal=USR1 $JOB failed"
job_ok
grep -q "USR1 (time limit or pre-emption in 120 s): relaying to the ranks" "$OUT" ||
  { cat "$OUT"; fail "job $JOB: the batch script did not relay USR1"; }
STOP=$(sed -n 's/.*stopped after step \([0-9]*\) (signal.*/\1/p' "$OUT")
[[ -n $STOP ]] || { cat "$OUT"; fail "job $JOB: no 'stopped after step N (signal ...)' line"; }
[[ $(ls ck) == "$(printf 'step_%08d' "$STOP")" ]] ||
  fail "job $JOB: expected exactly the checkpoint of step $STOP, found: $(ls ck)"
"$BIN" ckpt verify ck >/dev/null || fail "the pre-emption checkpoint does not verify"
note "scancel --batch --signal=USR1: job $JOB saved step $STOP and COMPLETED 0:0 ($(ms) ms)"

UNTIL=$((STOP + 5))
submit cr-mn-resume "${LONG[@]}" --set run.dir=run_pre --set checkpoint.dir=ck --set train.stop_after_step=$UNTIL
job_ok
grep -q "resumed at step $STOP" "$OUT" || { cat "$OUT"; fail "job $JOB did not resume at step $STOP"; }
single_host run_ref "${LONG[@]}" --set train.stop_after_step=$UNTIL
same_losses run_ref run_pre 1 "$STOP" "the pre-empted job vs the uninterrupted single-host run"
same_losses run_ref run_pre $((STOP + 1)) "$UNTIL" "the resumed job vs the uninterrupted single-host run"
note "resubmitted: job $JOB resumed at step $STOP; steps 1..$UNTIL bit-identical to the uninterrupted run ($(ms) ms)"

# --- Nothing left: the cleanup itself, checked -------------------------------------------------
stop_watchdog
bash "$SLURM_HOSTS" stop "$CLUSTER"
bash "$HOSTS" down
left=""
for p in /proc/[0-9]*; do
  case $(readlink "$p/exe" 2>/dev/null) in
    */slurmstepd | */slurmd | */slurmctld | */munged | */srun | "$BIN_REAL") ;;
    *) continue ;;
  esac
  tr '\0' '\n' <"$p/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$SLURM_CONF" && left+="${p#/proc/} "
done
[[ -z $left ]] || fail "processes of the cluster left after stop and hosts.sh down: $left"
ip netns list | grep -E "^(${CR_HOSTS_PREFIX}[0-9]+|${CR_HOSTS_PREFIX}-switch)( |\$)" &&
  fail "namespaces left after hosts.sh down"
echo "multinode slurm: ok ($(ms) ms)"
