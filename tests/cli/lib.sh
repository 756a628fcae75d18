# Shared helpers for the chainrule end-to-end tests (sourced, not run).
#
# Every test script is invoked as:  SCRIPT CHAINRULE_BINARY SOURCE_DIR [ARGS...]
# and starts with:
#   source "$(dirname "$0")/lib.sh"
#   cli_init "$@"          # sets CR, SRC, CLI_DIR, TINY, T (a fresh temp dir, removed on exit); cd "$T"
#
# Set CR_KEEP_TMP=1 to keep the temp dir of a run for inspection.

set -euo pipefail

PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3)

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

note() { echo "-- $*"; }

cli_init() {
  [[ $# -ge 2 ]] || fail "usage: $0 CHAINRULE_BINARY SOURCE_DIR [ARGS...]"
  CR=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
  SRC=$(cd "$2" && pwd)
  CLI_DIR=$SRC/tests/cli
  TINY=$CLI_DIR/tiny.yaml  # the tiny model every training test uses (data.dir, run.dir relative)
  [[ -x $CR ]] || fail "no chainrule binary at $CR"
  T=$(mktemp -d "${TMPDIR:-/tmp}/chainrule-cli.XXXXXX")
  if [[ -n ${CR_KEEP_TMP:-} ]]; then
    trap 'echo "kept $T"' EXIT
  else
    trap 'rm -rf "$T"' EXIT
  fi
  cd "$T"
}

# expect_error REGEX [REGEX...] -- CMD [ARGS...]
# Runs CMD and asserts: it exits non-zero (and was not killed by a signal), its whole stderr is
# exactly one newline-terminated line starting with "chainrule: error: " (not an internal error,
# not a usage dump), and that line matches every REGEX (grep -E).
expect_error() {
  local patterns=()
  while [[ $# -gt 0 && $1 != -- ]]; do
    patterns+=("$1")
    shift
  done
  [[ $# -gt 0 ]] || fail "expect_error: missing -- before the command"
  shift
  local out=$T/.expect_error.out err=$T/.expect_error.err rc=0
  "$@" >"$out" 2>"$err" || rc=$?
  local shown="command: $*
--- stderr ---
$(cat "$err")
--- stdout (last 5 lines) ---
$(tail -n 5 "$out")"
  [[ $rc -ne 0 ]] || fail "expected a non-zero exit status, got 0
$shown"
  [[ $rc -lt 128 ]] || fail "killed by signal $((rc - 128)) (exit $rc)
$shown"
  local lines terminated
  lines=$(grep -c '' "$err" || true)
  terminated=$(wc -l <"$err")
  [[ $lines -eq 1 && $terminated -eq 1 ]] ||
    fail "expected exactly one line on stderr, got $lines line(s) (newline-terminated: $terminated)
$shown"
  grep -q '^chainrule: error: ' "$err" ||
    fail "the stderr line does not start with 'chainrule: error: ' (internal error or usage text?)
$shown"
  local p
  for p in "${patterns[@]}"; do
    grep -Eq -- "$p" "$err" || fail "stderr does not match /$p/
$shown"
  done
  note "ok (exit $rc): $(cat "$err")"
}

# expect_error_or_success REGEX... -- CMD [ARGS...]: CMD may succeed (stderr empty); if it fails,
# it must fail as expect_error demands (one clean line matching every REGEX).
expect_error_or_success() {
  local args=("$@") rc=0
  while [[ $# -gt 0 && $1 != -- ]]; do shift; done
  shift
  "$@" >"$T/.expect_error.out" 2>"$T/.expect_error.err" || rc=$?
  if [[ $rc -eq 0 && ! -s $T/.expect_error.err ]]; then
    note "ok (succeeded): $*"
    return 0
  fi
  expect_error "${args[@]}"
}

# run_ok CMD [ARGS...]: runs CMD, which must succeed with an empty stderr; stdout goes to
# $T/.run_ok.out (also printed on failure).
run_ok() {
  local out=$T/.run_ok.out err=$T/.run_ok.err rc=0
  "$@" >"$out" 2>"$err" || rc=$?
  if [[ $rc -ne 0 || -s $err ]]; then
    fail "expected success with an empty stderr, got exit $rc
command: $*
--- stderr ---
$(cat "$err")
--- stdout (last 10 lines) ---
$(tail -n 10 "$out")"
  fi
}

# make_text FILE [LINES] [SEED]: a deterministic, learnable ASCII corpus (lines drawn from a few
# fixed sentences), LINES lines (default 3000, about 65 KB).
make_text() {
  "$PY" - "$1" "${2:-3000}" "${3:-0}" <<'EOF'
import random, sys
path, lines, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
sentences = ["the cat sat on the mat.", "a dog ran in the park.", "one two three four five.",
             "abc abc abc xyz."]
with open(path, "w") as f:
    for _ in range(lines):
        f.write(r.choice(sentences) + "\n")
EOF
}

# write_shard PATH [--n N] [--period P] [--append ID...] [--count C] [--magic M] [--version V]
# Writes an llm.c token shard: 256 little-endian int32 header (magic, version, token count), then
# the tokens i % P for i < N followed by the appended ids, as uint16 (version 1) or uint32 (2).
# --count overrides the header's token count (to fake a truncated file).
write_shard() {
  "$PY" - "$@" <<'EOF'
import argparse, struct
ap = argparse.ArgumentParser()
ap.add_argument("path")
ap.add_argument("--n", type=int, default=4000)
ap.add_argument("--period", type=int, default=16)
ap.add_argument("--append", type=int, nargs="*", default=[])
ap.add_argument("--count", type=int)
ap.add_argument("--magic", type=int, default=20240520)
ap.add_argument("--version", type=int, default=1)
a = ap.parse_args()
toks = [i % a.period for i in range(a.n)] + a.append
header = [0] * 256
header[0], header[1] = a.magic, a.version
header[2] = len(toks) if a.count is None else a.count
with open(a.path, "wb") as f:
    f.write(struct.pack("<256i", *header))
    f.write(struct.pack("<%d%s" % (len(toks), "I" if a.version == 2 else "H"), *toks))
EOF
}

# prepare_tiny_data DIR [TOKENIZER]: a small learnable corpus prepared into DIR.
prepare_tiny_data() {
  make_text "$T/corpus.txt"
  run_ok "$CR" prepare --input "$T/corpus.txt" --tokenizer "${2:-char}" --out "$1"
}

# json_field_text FILE TYPE FIELD: the raw JSON text of FIELD in every line of FILE whose "type" is TYPE,
# one per line (text, not re-formatted floats, so comparisons are exact).
json_field_text() {
  "$PY" - "$@" <<'EOF'
import json, re, sys
path, typ, field = sys.argv[1:4]
for line in open(path):
    if json.loads(line).get("type") != typ:
        continue
    m = re.search(r'"%s":(-?[0-9.eE+-]+|null|true|false|"[^"]*")' % re.escape(field), line)
    if not m:
        sys.exit("no %s in %s line: %s" % (field, typ, line.strip()))
    print(m.group(1))
EOF
}

# write_random_shard PATH N VOCAB [SEED]: an llm.c token shard (version 1, uint16) of N uniformly
# random token ids in [0, VOCAB), like data no model can learn from (the ragged-evaluation cases).
write_random_shard() {
  "$PY" - "$@" <<'PYEOF'
import array, random, struct, sys
path, n, vocab = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 0)
header = [0] * 256
header[0], header[1], header[2] = 20240520, 1, n
toks = array.array("H", (r.randrange(vocab) for _ in range(n)))
if sys.byteorder != "little":
    toks.byteswap()
with open(path, "wb") as f:
    f.write(struct.pack("<256i", *header))
    f.write(toks.tobytes())
PYEOF
}
