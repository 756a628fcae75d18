#!/usr/bin/env bash
# chainrule under a real Slurm: deploy/slurm/cpu.sbatch submitted with sbatch to a private
# one-node Slurm 22.05 cluster (tests/dist/slurm_cluster.sh), 4 ranks started by
# `srun --mpi=pmix` at tp=2 x dp=2, must succeed and match `mpirun -np 4` at the same layout,
# step by step and in the final weights (compare_runs.py; in practice they are bit-identical).
#
# Usage: slurm_test.sh CHAINRULE SRC_DIR [LOSS_TOL WEIGHT_TOL]
# Env: CR_SLURM_DIR=DIR uses (and leaves running, if it was already up) the cluster in DIR
#      instead of a fresh one; CR_SLURM_WAIT_S bounds the wait for the job (default 120 s).
#
# Exit 77 (skip) only when the Slurm daemons are installed but cannot run on this machine:
# munged, slurmctld or slurmd exits during start-up, or the node does not register within 30 s,
# without a configuration error in their logs (e.g. a sandbox that forbids what they need). The
# daemon logs are printed then. Missing packages (deploy/install_deps.sh installs them), a
# configuration error, a rejected submission, a failed or timed-out job, or any mismatch with
# the mpirun run FAIL. Then a pre-emption: USR1 to the batch script saves a checkpoint and
# the job completes with exit 0.
set -euo pipefail
BIN=$1 SRC=$2 LOSS_TOL=${3:-1e-5} WEIGHT_TOL=${4:-2e-4}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../cli/lib.sh"
cli_init "$BIN" "$SRC"
source "$HERE/slurm_cluster.sh"

# Whatever Slurm job or settings this test itself runs under must not leak into its submission.
for v in $(compgen -e); do
  case $v in SLURM_* | SBATCH_* | SRUN_* | SALLOC_*) unset "$v" ;; esac
done
# Open MPI refuses root without these (mpirun checks; harmless under srun). One thread per rank
# in both runs, as in parity.sh.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

# A run of this test that was killed outright (SIGKILL from a test-runner timeout) cannot stop
# its cluster: the daemons die with the process tree, but job steps (slurmstepd forks away from
# slurmd) and their ranks live on. Such a cluster is one of our /tmp dirs whose owning test has
# gone; end the processes that still belong to it (their SLURM_CONF is its slurm.conf), then
# remove it.
sweep_abandoned() {
  local d p
  for d in /tmp/chainrule-slurm.??????; do
    [[ -d $d && -O $d && -s $d/owner ]] || continue
    _sc_running "$(cat "$d/owner")" && continue
    for p in /proc/[0-9]*; do
      [[ $p == /proc/$$ ]] && continue
      if tr '\0' '\n' <"$p/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$d/slurm.conf"; then
        kill -KILL "${p#/proc/}" 2>/dev/null || true
      fi
    done
    note "removed the cluster of an earlier run that was killed: $d"
    rm -rf "$d"
  done
}
sweep_abandoned

# The cluster dir is under /tmp, not $TMPDIR: munged's socket path must fit a sockaddr_un
# (108 bytes), which a deep build directory can exceed.
if [[ -n ${CR_SLURM_DIR:-} ]]; then
  CLUSTER=$CR_SLURM_DIR OWN_DIR=0
else
  CLUSTER=$(mktemp -d /tmp/chainrule-slurm.XXXXXX) OWN_DIR=1
  echo $$ >"$CLUSTER/owner"
fi
SLURM_CLUSTER_STARTED=0
JOB=""
cleanup() {
  local rc=$?
  set +e
  if [[ -n $JOB ]] && squeue -h -j "$JOB" -o %i 2>/dev/null | grep -q .; then scancel "$JOB"; fi
  [[ $SLURM_CLUSTER_STARTED == 1 ]] && slurm_cluster_stop "$CLUSTER"
  if [[ $OWN_DIR == 1 ]]; then  # a kept dir has no owner left to sweep it
    if [[ -n ${CR_KEEP_TMP:-} ]]; then rm -f "$CLUSTER/owner"; else rm -rf "$CLUSTER"; fi
  fi
  if [[ -n ${CR_KEEP_TMP:-} ]]; then echo "kept $T and $CLUSTER"; else rm -rf "$T"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

daemon_logs() { slurm_logs "$CLUSTER" '*.log' 20; }

start=$(date +%s%N)
ms() { echo $((($(date +%s%N) - start) / 1000000)); }
rc=0
slurm_cluster_start "$CLUSTER" || rc=$?
case $rc in
  0) ;;
  2) fail "Slurm is not installed: run deploy/install_deps.sh (slurmctld slurmd slurm-client munge libpmix-dev)" ;;
  3)
    if cat "$CLUSTER"/log/* 2>/dev/null | grep -Eiq 'parse error|fatal:.*(plugin|slurm\.conf|config)'; then
      fail "the generated Slurm configuration is rejected (see the logs above): a bug in slurm_cluster.sh"
    fi
    echo "SKIP: the Slurm daemons are installed but cannot run here (see their logs above): this" \
      "environment stops munged/slurmctld/slurmd from starting or the node from registering"
    exit 77
    ;;
  *) fail "slurm_cluster_start: unexpected status $rc" ;;
esac
note "cluster up in $CLUSTER ($(ms) ms; started here: $SLURM_CLUSTER_STARTED)"
srun --mpi=list 2>&1 | grep -qw pmix || fail "this Slurm has no mpi/pmix plugin: $(srun --mpi=list 2>&1)"

make_text corpus.txt 4000 5
"$CR" prepare --input corpus.txt --tokenizer char --out data >/dev/null
CFG="$SRC/tests/dist/dist.yaml"
TP=2 NP=4

# The batch script, submitted as a user would, from the directory that holds data/ (the job's
# SLURM_SUBMIT_DIR). 4 tasks on a node with fewer CPUs need --overcommit, which srun inside
# inherits as SLURM_OVERCOMMIT; one CPU (thread) per rank.
JOB=$(CHAINRULE=$CR sbatch --parsable --job-name=chainrule-slurm-test --nodes=1 --ntasks=$NP \
  --ntasks-per-node=$NP --cpus-per-task=1 --overcommit --time=5 --output="$T/slurm-%j.out" \
  "$SRC/deploy/slurm/cpu.sbatch" "$CFG" --set run.dir=run_slurm --set parallel.tensor=$TP 2>sbatch.err) ||
  fail "sbatch rejected the job: $(cat sbatch.err)"
JOB=${JOB%%;*}
note "submitted job $JOB ($(ms) ms)"

# wait_job: until job $JOB has ended (at most CR_SLURM_WAIT_S); sets info and state.
wait_job() {
  local wait_s=${CR_SLURM_WAIT_S:-120} deadline
  deadline=$(($(date +%s) + ${CR_SLURM_WAIT_S:-120}))
  state=""
  while :; do
    info=$(scontrol show job "$JOB" -o 2>&1) || fail "scontrol show job $JOB: $info"
    state=$(sed -n 's/.* JobState=\([A-Z_]*\).*/\1/p' <<<"$info")
    case $state in
      PENDING | CONFIGURING | RUNNING | COMPLETING | SUSPENDED | REQUEUED | RESIZING | "") ;;
      *) break ;;
    esac
    if (($(date +%s) >= deadline)); then
      echo "$info"
      [[ -f $T/slurm-$JOB.out ]] && { echo "--- job output ---"; cat "$T/slurm-$JOB.out"; }
      daemon_logs
      scancel "$JOB" || true
      fail "job $JOB still $state after ${wait_s} s (reason: $(sed -n 's/.* Reason=\([^ ]*\).*/\1/p' <<<"$info")); cancelled"
    fi
    sleep 0.5
  done
}
wait_job
out=$T/slurm-$JOB.out
exit_code=$(sed -n 's/.* ExitCode=\([0-9:]*\).*/\1/p' <<<"$info")
note "job $JOB: $state, exit code $exit_code ($(ms) ms)"
if [[ $state != COMPLETED || $exit_code != 0:0 ]]; then
  echo "$info"
  [[ -f $out ]] && { echo "--- job output ---"; cat "$out"; }
  daemon_logs
  fail "job $JOB ended $state with exit code $exit_code"
fi
[[ -f $out ]] || fail "job $JOB left no output file $out"
grep -q "^chainrule-slurm: job $JOB finished: exit status 0$" "$out" ||
  { cat "$out"; fail "job $JOB: the batch script did not report a clean finish"; }
# The ranks joined one MPI world through Slurm's PMIx (not 4 singletons, not mpirun).
grep -q "launched as $NP ranks under MPI .*SLURM_JOB_ID=$JOB SLURM_PROCID=0 .*SLURM_NTASKS=$NP" "$out" ||
  { cat "$out"; fail "job $JOB: rank 0 did not report $NP ranks launched by srun"; }
grep -q "layout: $NP ranks = tensor $TP x data $((NP / TP))" "$out" ||
  { cat "$out"; fail "job $JOB: not the tp=$TP x dp=$((NP / TP)) layout"; }

timeout 150 mpirun -np $NP --bind-to none -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS \
  "$CR" train "$CFG" --set run.dir=run_mpirun --set parallel.tensor=$TP >mpirun.log 2>&1 ||
  { cat mpirun.log; fail "the mpirun -np $NP run failed"; }
grep -q "launched as $NP ranks under MPI" mpirun.log || { cat mpirun.log; fail "mpirun: not $NP ranks"; }
note "mpirun -np $NP done ($(ms) ms)"

"$PY" "$SRC/tests/dist/compare_runs.py" run_mpirun run_slurm "$LOSS_TOL" "$WEIGHT_TOL" ||
  fail "the Slurm run (srun --mpi=pmix) does not match mpirun -np $NP at tp=$TP"
if cmp -s run_mpirun/model.safetensors run_slurm/model.safetensors &&
  [[ $(json_field_text run_mpirun/metrics.jsonl train loss) == $(json_field_text run_slurm/metrics.jsonl train loss) ]]; then
  note "bit-identical: losses and weights"
else
  note "within tolerance but not bit-identical"
fi
note "sbatch + srun --mpi=pmix matches mpirun at tp=$TP x dp=$((NP / TP)) ($(ms) ms)"

# Pre-emption: the --signal=B:USR1 warning, sent to the batch script as Slurm would, is relayed
# to the ranks, which save a checkpoint and exit 0; the job completes cleanly.
JOB=$(CHAINRULE=$CR sbatch --parsable --job-name=chainrule-slurm-preempt --nodes=1 --ntasks=$NP \
  --ntasks-per-node=$NP --cpus-per-task=1 --overcommit --time=5 --output="$T/slurm-%j.out" \
  "$SRC/deploy/slurm/cpu.sbatch" "$CFG" --set run.dir=run_preempt --set parallel.tensor=$TP \
  --set train.max_steps=100000 --set checkpoint.dir=ck_preempt 2>sbatch.err) ||
  fail "sbatch rejected the job: $(cat sbatch.err)"
JOB=${JOB%%;*}
for _ in $(seq 600); do
  [[ -f run_preempt/metrics.jsonl && $(grep -c '"type":"train"' run_preempt/metrics.jsonl) -ge 20 ]] && break
  sleep 0.1
done
scancel --batch --signal=USR1 "$JOB" || fail "scancel --batch --signal=USR1 $JOB failed"
wait_job
out=$T/slurm-$JOB.out
exit_code=$(sed -n 's/.* ExitCode=\([0-9:]*\).*/\1/p' <<<"$info")
[[ $state == COMPLETED && $exit_code == 0:0 ]] || { cat "$out"; fail "pre-empted job $JOB ended $state ($exit_code)"; }
stop=$(sed -n 's/.*stopped after step \([0-9]*\) (signal.*/\1/p' "$out")
[[ -n $stop && -d ck_preempt/$(printf 'step_%08d' "$stop") ]] ||
  { cat "$out"; fail "pre-empted job $JOB: no checkpoint of the step it stopped after"; }
"$CR" ckpt verify ck_preempt >/dev/null || fail "the pre-emption checkpoint does not verify"
note "USR1 to the batch script: saved step $stop, job COMPLETED 0:0 ($(ms) ms)"
echo "slurm: ok ($(ms) ms)"
