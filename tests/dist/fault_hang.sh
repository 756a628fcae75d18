#!/usr/bin/env bash
# A rank that hangs (the test-only fault hook stops rank 1 before its 5th collective) must make
# every rank exit non-zero within parallel.timeout_s + 10 s, with a message naming the collective.
set -euo pipefail
BIN=$1 SRC=$2
source "$(dirname "$0")/lib.sh"
dist_init "$BIN" "$SRC" 2000
TIMEOUT_S=3
start=$(date +%s)
set +e
CR_TEST_HANG_RANK=1 CR_TEST_HANG_AT=5 timeout 60 mpirun -np 2 --bind-to none \
  -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x CR_TEST_HANG_RANK -x CR_TEST_HANG_AT \
  "$BIN" train "$SRC/tests/dist/dist.yaml" --set parallel.tensor=2 --set parallel.timeout_s=$TIMEOUT_S \
  >out.log 2>&1
rc=$?
set -e
elapsed=$(( $(date +%s) - start ))
cat out.log | grep -v '^\s*$' | tail -15
[[ $rc -ne 0 ]] || fail "the job exited 0 although a rank hung"
[[ $rc -ne 124 ]] || fail "the job hung: killed by the test's own 60 s timeout"
(( elapsed <= TIMEOUT_S + 10 )) || fail "the job took ${elapsed}s to end (timeout ${TIMEOUT_S}s + 10 s)"
grep -E "collective #5 all_reduce\(sum\) \([0-9]+ bytes\) on group tp\[0,1\] did not complete within parallel.timeout_s" out.log \
  || fail "no message naming the collective"
pgrep -f "$BIN train" && fail "ranks left behind"
note "hung rank: job ended in ${elapsed}s with exit $rc"
