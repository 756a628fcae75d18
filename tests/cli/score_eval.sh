#!/usr/bin/env bash
# `chainrule score` agrees with `chainrule eval` (issue 15's proof): scoring the run's val shard
# with stride T (the context) gives a mean surprisal equal to eval's bits/token within 1e-4
# relative, plain and --json. And the sliding windows score each token with the context the
# stride promises: token k is predicted from x[b..k-1], b the start of the first window that
# reaches it, which re-scoring the shard x[b..k] alone must reproduce. Input shorter than the
# context: every stride gives the same bits. Micro-batching does not change the numbers.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

prepare_tiny_data data
run_ok "$CR" train "$TINY" --set run.dir=run --set train.max_steps=40 --set run.eval_every=0
VAL=data/data_val_000000.bin
[[ -f $VAL ]] || fail "no val shard $VAL (have: $(ls data | tr '\n' ' '))"

run_ok "$CR" eval run --json
cp "$T/.run_ok.out" eval.json
run_ok "$CR" eval run
cp "$T/.run_ok.out" eval.txt
run_ok "$CR" score run --tokens "$VAL" --stride 32 --json
cp "$T/.run_ok.out" score32.jsonl
run_ok "$CR" score run --tokens "$VAL" --stride 32 --color never
cp "$T/.run_ok.out" score32.txt

"$PY" - eval.json eval.txt score32.jsonl score32.txt <<'EOF'
import json, math, re, sys
ev = json.loads(open(sys.argv[1]).read())
ev_txt = float(re.search(r"^bits/token +([0-9.]+)$", open(sys.argv[2]).read(), re.M).group(1))
lines = [json.loads(l) for l in open(sys.argv[3])]
toks, summ = lines[:-1], lines[-1]
sc_txt = float(re.search(r"^bits/token +([0-9.]+)$", open(sys.argv[4]).read(), re.M).group(1))
def fail(m):
    sys.exit("FAIL: " + m)
if summ.get("type") != "summary":
    fail("last line is not the summary: %s" % summ)
if summ["tokens"] != ev["tokens"] or len(toks) != ev["tokens"]:
    fail("score scored %d tokens (%d lines), eval %d" % (summ["tokens"], len(toks), ev["tokens"]))
if [t["i"] for t in toks] != list(range(1, len(toks) + 1)):
    fail("token positions are not 1..n-1 (a shard's first token is context only)")
mean = sum(t["bits"] for t in toks) / len(toks)
for name, a, b, tol in (("eval --json", mean, ev["val_bits_per_token"], 1e-4),
                        ("summary bits_per_token", summ["bits_per_token"], ev["val_bits_per_token"], 1e-4),
                        ("plain eval (4 decimals)", mean, ev_txt, 1e-4),
                        ("plain score vs plain eval", sc_txt, ev_txt, 1e-9)):
    if not abs(a - b) <= tol * abs(b):
        fail("%s: score's mean %.8f vs eval's %.8f (rel %.2e > %g)" % (name, a, b, abs(a - b) / abs(b), tol))
if not abs(summ["nats_per_token"] - ev["val_loss"]) <= 1e-4 * ev["val_loss"]:
    fail("nats/token %.8f vs eval's val_loss %.8f" % (summ["nats_per_token"], ev["val_loss"]))
print("-- score --stride 32: %.8f bits/token over %d tokens; eval: %.8f (rel %.1e)"
      % (mean, len(toks), ev["val_bits_per_token"], abs(mean - ev["val_bits_per_token"]) / ev["val_bits_per_token"]))
EOF

# ---- the context each stride gives: re-score x[b..k] alone and compare token k ------------------
"$PY" - "$VAL" <<'EOF'
import struct, sys
d = open(sys.argv[1], "rb").read()
n = struct.unpack("<3i", d[:12])[2]
toks = struct.unpack("<%dH" % n, d[1024:1024 + 2 * n])[:200]
def shard(path, t):
    h = [0] * 256
    h[0], h[1], h[2] = 20240520, 1, len(t)
    open(path, "wb").write(struct.pack("<256i", *h) + struct.pack("<%dH" % len(t), *t))
shard("head.bin", toks)
for s in (1, 16, 32):
    for k in (20, 33, 47, 100, 199):
        b = max(0, -(-(k - 32) // s) * s)  # the first window start b (multiple of s) with b + 32 >= k
        shard("ctx_s%d_k%d.bin" % (s, k), toks[b:k + 1])
EOF
for s in 1 16 32; do
  run_ok "$CR" score run --tokens head.bin --stride $s --json --micro-batch 3
  cp "$T/.run_ok.out" head_s$s.jsonl
  for k in 20 33 47 100 199; do
    run_ok "$CR" score run --tokens ctx_s${s}_k$k.bin --stride 32 --json
    tail -n 2 "$T/.run_ok.out" | head -n 1 >ctx_s${s}_k$k.json
  done
done
run_ok "$CR" score run --tokens head.bin --stride 16 --json --micro-batch 1
cp "$T/.run_ok.out" head_s16_mb1.jsonl
"$PY" <<'EOF'
import json, sys
def load(p):
    return [json.loads(l) for l in open(p)][:-1]
def fail(m):
    sys.exit("FAIL: " + m)
def close(a, b):  # one window alone vs in a batch: the same arithmetic up to GEMM blocking
    return abs(a - b) <= 1e-5 * max(1.0, abs(b))
runs = {s: load("head_s%d.jsonl" % s) for s in (1, 16, 32)}
for s, toks in runs.items():
    if [t["i"] for t in toks] != list(range(1, 200)):
        fail("stride %d: positions are not 1..199" % s)
    for k in (20, 33, 47, 100, 199):
        alone = json.loads(open("ctx_s%d_k%d.json" % (s, k)).read())
        if alone["token"] != toks[k - 1]["token"] or not close(toks[k - 1]["bits"], alone["bits"]):
            fail("stride %d, token %d: %s in the stream, %s scored from its window alone"
                 % (s, k, toks[k - 1], alone))
    # The first window scores all of its 32 targets under every stride.
    for a, b in zip(runs[32][:32], toks[:32]):
        if a["bits"] != b["bits"]:
            fail("stride %d: token %d differs from stride 32 inside the first window" % (s, a["i"]))
if all(close(a["bits"], b["bits"]) for a, b in zip(runs[1][32:], runs[32][32:])):
    fail("stride 1 and 32 give the same bits past the first window: the stride has no effect")
for a, b in zip(load("head_s16_mb1.jsonl"), runs[16]):
    if not close(a["bits"], b["bits"]):
        fail("--micro-batch 1 and 3 differ at token %d: %s vs %s" % (a["i"], a["bits"], b["bits"]))
print("-- strides 1, 16, 32: token k's bits equal those of x[b..k] scored alone")
EOF

# ---- shorter than the context: one window, the same bits for every stride -----------------------
printf 'the cat sat on the mat.\n' >short.txt  # 24 tokens + the end-of-text token < 32
for s in 1 16 32; do
  run_ok "$CR" score run --input short.txt --stride $s --json
  cp "$T/.run_ok.out" short_s$s.jsonl
done
"$PY" <<'EOF'
import json, sys
runs = [[json.loads(l) for l in open("short_s%d.jsonl" % s)] for s in (1, 16, 32)]
bits = [[t["bits"] for t in r[:-1]] for r in runs]
if len(bits[0]) != 24:
    sys.exit("FAIL: %d tokens scored, expected all 24 of the input" % len(bits[0]))
if not bits[0] == bits[1] == bits[2]:
    sys.exit("FAIL: strides 1, 16, 32 disagree on an input shorter than the context")
print("-- short input: strides 1, 16, 32 identical (%d tokens, %.4f bits/token)"
      % (len(bits[0]), runs[0][-1]["bits_per_token"]))
EOF
