#!/usr/bin/env bash
# A rank killed with SIGKILL makes `chainrule launch` exit non-zero within 10 s, leaving no
# process behind.
set -euo pipefail
BIN=$1 SRC=$2
source "$(dirname "$0")/lib.sh"
dist_init "$BIN" "$SRC" 2000
# Long enough that the kill lands mid-training; a marker in run.dir tells the ranks apart.
"$BIN" launch --nproc 2 "$SRC/tests/dist/dist.yaml" --set train.max_steps=100000 \
  --set run.dir="run_kill_$$" --set parallel.tensor=2 >out.log 2>&1 &
launcher=$!
for _ in $(seq 100); do
  grep -q "step" out.log 2>/dev/null && break
  sleep 0.1
done
victim=$(pgrep -f "train .*run_kill_$$" | tail -1)
[[ -n $victim ]] || { cat out.log; fail "no rank found to kill"; }
start=$(date +%s%N)
kill -9 "$victim"
set +e
timeout 30 tail --pid="$launcher" -f /dev/null
wait "$launcher"
rc=$?
set -e
ms=$(( ($(date +%s%N) - start) / 1000000 ))
tail -5 out.log
[[ $rc -ne 0 ]] || fail "launch exited 0 after a rank was killed"
(( ms <= 10000 )) || fail "launch took ${ms} ms to exit"
sleep 0.5
if pgrep -f "run_kill_$$" >/dev/null; then pkill -9 -f "run_kill_$$"; fail "processes left behind"; fi
note "killed rank $victim: launch exited $rc after ${ms} ms, nothing left behind"
