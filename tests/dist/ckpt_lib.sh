# Shared start of the checkpoint tests (sourced): dist_init plus helpers to run a layout and read
# losses back exactly.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CKPT_CFG=""  # set by ckpt_init: tests/dist/dist.yaml, or $DIST_CONFIG there

# ckpt_init CHAINRULE SOURCE_DIR: a fresh temp dir with data (see dist_init).
ckpt_init() {
  dist_init "$1" "$2" 4000
  CKPT_CFG="$SRC/tests/dist/${DIST_CONFIG:-dist.yaml}"  # DIST_CONFIG: e.g. dist_llama.yaml
}

# train_layout TP DP LOG [--set K=V ...]: `chainrule train` of the parity model at (tp, dp) under
# mpirun (one rank runs without MPI), stdout+stderr to LOG. Returns the job's exit status.
# CR_* variables in the environment reach every rank.
train_layout() {
  local tp=$1 dp=$2 log=$3
  shift 3
  local np=$((tp * dp)) fwd=()
  for v in $(env | sed -n 's/^\(CR_[A-Z_]*\)=.*/\1/p'); do fwd+=(-x "$v"); done
  if [[ $np -eq 1 ]]; then
    "$BIN" train "$CKPT_CFG" --set parallel.tensor="$tp" "$@" >"$log" 2>&1
  else
    mpirun -np "$np" --bind-to none -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS "${fwd[@]}" \
      "$BIN" train "$CKPT_CFG" --set parallel.tensor="$tp" "$@" >"$log" 2>&1
  fi
}

# losses RUN_DIR FIRST LAST: the raw JSON text of the train loss of steps FIRST..LAST, one per
# line (the last record of a step wins: a resumed run re-trains the steps after its checkpoint).
losses() {
  "$PY" - "$1/metrics.jsonl" "$2" "$3" <<'PYEOF'
import json, re, sys
path, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
got = {}
for line in open(path):
    j = json.loads(line)
    if j.get("type") == "train":
        got[j["step"]] = re.search(r'"loss":(-?[0-9.eE+-]+)', line).group(1)
missing = [s for s in range(first, last + 1) if s not in got]
if missing:
    sys.exit("%s: no loss for steps %s" % (path, missing))
for s in range(first, last + 1):
    print(s, got[s])
PYEOF
}

# same_losses A B FIRST LAST WHAT: the two runs' losses of steps FIRST..LAST are bit-identical.
same_losses() {
  local a b
  a=$(losses "$1" "$3" "$4") || fail "$5: $a"
  b=$(losses "$2" "$3" "$4") || fail "$5: $b"
  [[ "$a" == "$b" ]] || fail "$5: losses of steps $3..$4 differ
$(diff <(echo "$a") <(echo "$b") | head -20)"
}

# no_temporaries DIR: no step_*.tmp left in a checkpoint.dir.
no_temporaries() {
  local left
  left=$(find "$1" -maxdepth 1 -name 'step_*.tmp' | head -5)
  [[ -z $left ]] || fail "temporaries left in $1: $left"
}
