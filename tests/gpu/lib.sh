# shellcheck shell=bash
# Shared start of the GPU test scripts (sourced, not run): the cli and dist helpers
# (tests/cli/lib.sh, tests/dist/lib.sh: a fresh temp dir, Open MPI allowed as root and
# oversubscribed, a small char-level dataset in ./data), plus the GPU probe.
#
# gpu_init CHAINRULE SOURCE_DIR CORPUS_LINES
# Exits 77 (skipped) unless test_gpu_ops, found beside chainrule, reports a usable GPU: the probe
# asks the same cr::cuda_available() the trainer does, so a binary built without the CUDA
# backend skips too. Sets GAPS to the run comparer (gaps.py).
source "$(dirname "${BASH_SOURCE[0]}")/../dist/lib.sh"

gpu_probe() {
  local probe
  probe="$(dirname "$1")/test_gpu_ops"
  if [[ ! -x $probe ]]; then
    echo "skipped: no $probe to ask whether a GPU is usable"
    return 77
  fi
  local rc=0 out
  out=$("$probe" --probe 2>&1) || rc=$?
  echo "$out"
  return $rc
}

gpu_init() {
  local rc=0
  gpu_probe "$1" || rc=$?
  if [[ $rc -eq 77 ]]; then
    exit 77
  elif [[ $rc -ne 0 ]]; then
    echo "FAIL: the GPU probe failed (exit $rc)" >&2
    exit 1
  fi
  dist_init "$1" "$2" "$3"
  # shellcheck disable=SC2034  # used by the scripts that source this file
  GAPS=$SRC/tests/gpu/gaps.py
}
