#!/usr/bin/env bash
# The flight recorder end to end: rank 3 of a tp2 x dp2 job hangs (the test-only hook,
# CR_TEST_HANG_LABEL) mid-forward, mid-backward, in the DP gradient reduction and in a checkpoint
# save. Every job must end within parallel.timeout_s + 10 s, exit non-zero, leave no rank behind
# and print exactly one `desync:` line naming rank 3 and the collective it never started. The
# four points rotate over RUNS runs (default 20: 5 each) in one run.dir, so each run's rank 0 must
# also clear the previous run's flight files. First one run with rank 0 hung (another rank must
# print the line in its place); at the end `chainrule diagnose` on the last run's dir.
set -euo pipefail
BIN=$1 SRC=$2
RUNS=${3:-20}
source "$(dirname "$0")/lib.sh"
dist_init "$BIN" "$SRC" 2000
TIMEOUT_S=2
RUN=$PWD/run  # absolute: it names this test's ranks for pgrep

# name | hung rank | hook label prefix | k-th match | what the desync line must say it never started
POINTS=(
  "forward|3|attn.proj.fwd|3|tp\[2,3\] attn\.proj\.fwd"
  "backward|3|mlp.fc.bwd|2|tp\[2,3\] mlp\.fc\.bwd"
  "dp-reduction|3|grad.bucket|1|dp\[1,3\] grad\.bucket"
  "checkpoint|3|ckpt.save|1|world\[0,1,2,3\] ckpt\.save"
  "rank0-forward|0|attn.proj.fwd|3|tp\[0,1\] attn\.proj\.fwd"
)

# run_hung POINT_INDEX RUN: one job with a rank hung at that point; checks the whole outcome.
run_hung() {
  local name rank label count expect
  IFS='|' read -r name rank label count expect <<<"${POINTS[$1]}"
  local sets=(--set parallel.tensor=2 --set parallel.timeout_s=$TIMEOUT_S --set train.max_steps=3
              --set "run.dir=$RUN")
  if [[ $name == checkpoint ]]; then
    rm -rf ckpt
    sets+=(--set checkpoint.dir=ckpt --set checkpoint.every=1)
  fi
  local start rc elapsed
  start=$(date +%s.%N)
  set +e
  CR_TEST_HANG_RANK=$rank CR_TEST_HANG_LABEL=$label CR_TEST_HANG_COUNT=$count timeout 60 \
    mpirun -np 4 --bind-to none -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS \
    -x CR_TEST_HANG_RANK -x CR_TEST_HANG_LABEL -x CR_TEST_HANG_COUNT \
    "$BIN" train "$SRC/tests/dist/dist.yaml" "${sets[@]}" >out.log 2>&1
  rc=$?
  set -e
  elapsed=$(echo "$(date +%s.%N) - $start" | bc)
  local show="run $2 ($name): see the log above"
  if [[ $rc -eq 0 || $rc -eq 124 ]] || ! (( $(echo "$elapsed <= $TIMEOUT_S + 10" | bc) )); then
    grep -v '^\s*$' out.log | tail -20
    [[ $rc -ne 0 ]] || fail "$show: the job exited 0 although rank $rank hung"
    [[ $rc -ne 124 ]] || fail "$show: the job hung: killed by the test's own 60 s timeout"
    fail "$show: the job took ${elapsed}s to end (timeout ${TIMEOUT_S}s + 10 s)"
  fi
  local lines
  lines=$(grep -c '^desync:' out.log || true)
  if [[ $lines -ne 1 ]] || ! grep -Eq "^desync: rank $rank .*never started (collective )?#[0-9]+ \($expect" out.log; then
    grep -v '^\s*$' out.log | tail -20
    fail "$show: expected exactly one 'desync:' line naming rank $rank and ($expect), got $lines"
  fi
  if pgrep -f -- "run.dir=$RUN" >/dev/null; then  # this job's ranks only (others may share $BIN)
    pgrep -af -- "run.dir=$RUN"
    fail "$show: ranks left behind"
  fi
  [[ ! -e run/flight/rank-7.json ]] || fail "$show: rank 0 left a stale flight file in place"
  for r in 0 1 2 3; do [[ -s run/flight/rank-$r.json ]] || fail "$show: no run/flight/rank-$r.json"; done
  printf -- '-- run %2d %-12s exit %d in %5.1fs: %s\n' "$2" "$name" "$rc" "$elapsed" \
    "$(grep '^desync:' out.log | cut -c1-150)"
}

mkdir -p run/flight
echo '{}' >run/flight/rank-7.json  # an earlier run's leftover: rank 0 must remove it
run_hung 4 0  # rank 0 hung: the lowest rank that timed out prints in its place
for ((i = 1; i <= RUNS; i++)); do run_hung $(((i - 1) % 4)) "$i"; done

# chainrule diagnose on the last run's dir: the same line, and a row per rank.
"$BIN" diagnose run >diag.log
cat diag.log
head -1 diag.log | grep -q '^desync: rank 3 ' || fail "chainrule diagnose: no desync line naming rank 3"
[[ $(grep -cE '^ +[0-3]  ' diag.log) -eq 4 ]] || fail "chainrule diagnose: expected a row per rank"
cmp -s <(head -1 diag.log) <(head -1 run/flight/diagnosis.txt) ||
  fail "chainrule diagnose and rank 0's diagnosis.txt disagree"
set +e
"$BIN" diagnose nowhere >bad.log 2>&1
rc=$?
set -e
[[ $rc -ne 0 && $(wc -l <bad.log) -eq 1 ]] && grep -q nowhere bad.log ||
  { cat bad.log; fail "chainrule diagnose nowhere: expected one error line naming the path"; }
note "desync: $((RUNS + 1)) hung jobs diagnosed, each within ${TIMEOUT_S} s + 10 s"
