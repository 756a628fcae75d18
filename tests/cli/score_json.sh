#!/usr/bin/env bash
# `chainrule score` outputs: JSON lines (one per token, then the summary) whose numbers add up
# (the per-token bits sum to the total; with --top V the alternatives are the whole normalised
# distribution: their probabilities sum to 1 and the token's rank is its place in it), whose
# texts concatenate to the input, read from a file or stdin; partial UTF-8 characters of a byte
# tokenizer are U+FFFD plus their bytes in JSON and \xNN in the terminal and HTML; HTML escapes
# markup and is written atomically; --color always / never / auto (a pipe).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

prepare_tiny_data data
run_ok "$CR" train "$TINY" --set run.dir=run --set train.max_steps=40 --set run.eval_every=0
head -n 100 corpus.txt >in.txt  # ~2 KB: dozens of windows of 32

run_ok "$CR" score run --input in.txt --json
cp "$T/.run_ok.out" in.jsonl
run_ok "$CR" score run --input in.txt --json --top 27  # the whole vocabulary
cp "$T/.run_ok.out" in_all.jsonl
run_ok "$CR" score run --input - --json --top 0 <in.txt
cp "$T/.run_ok.out" stdin.jsonl

"$PY" - in.txt in.jsonl in_all.jsonl stdin.jsonl <<'EOF'
import json, math, sys
text = open(sys.argv[1], encoding="utf-8").read()
def fail(m):
    sys.exit("FAIL: " + m)
def load(p):
    rows = [json.loads(l) for l in open(p, encoding="utf-8")]
    if rows[-1].get("type") != "summary" or any("type" in r for r in rows[:-1]):
        fail("%s: expected token lines then one summary line" % p)
    return rows[:-1], rows[-1]
toks, s = load(sys.argv[2])
n = len(text)  # the char tokenizer: one token per character
if s["tokens"] != n or len(toks) != n:
    fail("%d token lines, summary says %d, the input has %d characters" % (len(toks), s["tokens"], n))
if [t["i"] for t in toks] != list(range(n)):
    fail("positions are not 0..n-1")
if "".join(t["text"] for t in toks) != text:
    fail("the token texts do not concatenate to the input")
total = sum(t["bits"] for t in toks)
if not abs(total - s["bits"]) <= 1e-9 * s["bits"]:
    fail("per-token bits sum to %.12f, the summary says %.12f" % (total, s["bits"]))
for k, want in (("bits_per_token", s["bits"] / n), ("nats_per_token", s["bits"] * math.log(2) / n),
                ("bits_per_byte", s["bits"] / len(text.encode()))):
    if not abs(s[k] - want) <= 1e-12 * want:
        fail("summary %s %.12f, expected %.12f" % (k, s[k], want))
if s["bytes"] != len(text.encode()):
    fail("summary bytes %d, the input has %d" % (s["bytes"], len(text.encode())))
for t in toks:
    if len(t["top"]) != 5:
        fail("token %d: %d alternatives, expected --top's default 5" % (t["i"], len(t["top"])))
    bits = [a["bits"] for a in t["top"]]
    if bits != sorted(bits):
        fail("token %d: alternatives not likeliest first: %s" % (t["i"], bits))
    if t["rank"] == 1 and not t["bits"] <= t["top"][0]["bits"]:
        fail("token %d has rank 1 but more bits than top[0]: %s" % (t["i"], t))
    if t["rank"] <= 5 and t["top"][t["rank"] - 1]["token"] != t["token"] and t["top"][t["rank"] - 1]["bits"] != t["bits"]:
        fail("token %d: rank %d but top[%d] is another token: %s" % (t["i"], t["rank"], t["rank"] - 1, t))
# The whole distribution: sum of 2^-bits = 1, the token is in it with its own bits, and its rank
# counts the strictly likelier tokens.
all_toks, _ = load(sys.argv[3])
for t in all_toks:
    if sorted(a["token"] for a in t["top"]) != list(range(27)):
        fail("--top 27 does not list every token of the vocabulary at %d" % t["i"])
    p = sum(2.0 ** -a["bits"] for a in t["top"])
    if not abs(p - 1) <= 1e-9:
        fail("token %d: the probabilities of the whole vocabulary sum to %.15f" % (t["i"], p))
    own = [a["bits"] for a in t["top"] if a["token"] == t["token"]][0]
    if own != t["bits"]:
        fail("token %d: %.17g bits, but %.17g in its own distribution" % (t["i"], t["bits"], own))
    if t["rank"] != 1 + sum(a["bits"] < t["bits"] for a in t["top"]):
        fail("token %d: rank %d does not count the likelier tokens: %s" % (t["i"], t["rank"], t))
stdin_toks, stdin_s = load(sys.argv[4])
if [(t["token"], t["bits"]) for t in stdin_toks] != [(t["token"], t["bits"]) for t in toks]:
    fail("--input - (stdin) scores differently from the file")
if any(t["top"] for t in stdin_toks) or stdin_s["source"] != "<stdin>":
    fail("--top 0 lists alternatives, or stdin is not named <stdin>: %s" % stdin_s)
print("-- %d tokens, %.4f bits/token; the distributions sum to 1" % (n, s["bits_per_token"]))
EOF

# ---- terminal colours ----------------------------------------------------------------------------
run_ok "$CR" score run --input in.txt --color always
grep -q $'\x1b\[48;5;' "$T/.run_ok.out" || fail "--color always printed no 256-colour backgrounds"
grep -q '^bits/token ' "$T/.run_ok.out" || fail "--color always printed no totals"
for mode in never auto; do  # auto: stdout is a file here, not a terminal
  run_ok "$CR" score run --input in.txt --color $mode
  ! grep -q $'\x1b' "$T/.run_ok.out" || fail "--color $mode printed escape sequences to a file"
  head -c "$(wc -c <in.txt)" "$T/.run_ok.out" | cmp -s - in.txt ||
    fail "--color $mode does not print the input text as is"
done

# ---- a byte tokenizer: tokens inside a UTF-8 character; HTML escaping; atomic write -------------
mkdir -p bdata && printf 'na\xc3\xafve <b>&amp;</b> "q" '"'"'x'"'"'\n' >odd.txt
{ cat corpus.txt odd.txt; } >bcorpus.txt
run_ok "$CR" prepare --input bcorpus.txt --tokenizer byte --out bdata
run_ok "$CR" train "$TINY" --set data.dir=bdata --set run.dir=brun --set train.max_steps=10 --set run.eval_every=0
mkdir pages
run_ok "$CR" score brun --input odd.txt --json --html pages/odd.html
cp "$T/.run_ok.out" odd.jsonl
[[ $(ls -A pages) == odd.html ]] || fail "pages/ holds $(ls -A pages | tr '\n' ' '), expected odd.html alone"
run_ok "$CR" score brun --input odd.txt --color always
cp "$T/.run_ok.out" odd.term
"$PY" - odd.txt odd.jsonl pages/odd.html odd.term <<'EOF'
import json, sys
raw = open(sys.argv[1], "rb").read()
def fail(m):
    sys.exit("FAIL: " + m)
rows = [json.loads(l) for l in open(sys.argv[2], encoding="utf-8")][:-1]
rebuilt = b"".join(bytes.fromhex(r["bytes"]) if "bytes" in r else r["text"].encode() for r in rows)
if rebuilt != raw:
    fail("JSON texts/bytes rebuild %r, the input is %r" % (rebuilt, raw))
partial = [r for r in rows if "bytes" in r]
if [(r["bytes"], r["text"]) for r in partial] != [("c3", "\ufffd"), ("af", "\ufffd")]:
    fail("the two bytes of U+00EF should be U+FFFD with bytes c3, af: %s" % partial)
try:
    page = open(sys.argv[3], "rb").read().decode("utf-8")
    term = open(sys.argv[4], "rb").read().decode("utf-8")
except UnicodeDecodeError as e:
    fail("the HTML page or terminal output is not valid UTF-8: %s" % e)
import html, re
m = re.search(r'<pre id="text">(.*)</pre>', page, re.S)
if not m:
    fail("the HTML page has no <pre id=\"text\">")
body = m.group(1)
spans = re.findall(r'<span class="s[0-9]" title="[^"<>]*">([^<>]*)</span>', body)
if len(spans) != len(rows) or re.sub(r'<span class="s[0-9]" title="[^"<>]*">[^<>]*</span>', "", body):
    fail("the text is not one <span class title> per token (%d spans, %d tokens)" % (len(spans), len(rows)))
shown = html.unescape("".join(spans))
want = raw.decode("utf-8").replace("\u00ef", r"\xc3\xaf").replace("\n", "\u21b5\n")
if shown != want:
    fail("the page shows %r, expected %r" % (shown, want))
for bad in ("http:", "https:", "<script", "<link", "src=", "url("):
    if bad in page:
        fail("the HTML page holds %r (an external resource)" % bad)
if "white-space:pre-wrap" not in page:
    fail("the HTML text does not keep whitespace (white-space:pre-wrap)")
if r"\xc3" not in term or "\ufffd" in term:
    fail("the terminal heat map does not show the partial character as \\xNN")
print("-- partial UTF-8: U+FFFD + bytes in JSON, \\xNN in HTML and terminal; markup escaped")
EOF
