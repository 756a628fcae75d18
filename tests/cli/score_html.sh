#!/usr/bin/env bash
# Issue 15's picture: `score --html` of a few fortunes, rendered by a real headless browser
# (Debian's chromium), shows the surprisal heat map. The screenshot is decoded (an 8-bit RGB(A)
# PNG: zlib + numpy) and, below the page's legend and totals (under the text's top rule), at least
# 3 colours of the page's own heat scale must each cover a substantial area. The screenshot is
# kept: score_html.sh CHAINRULE SOURCE_DIR [ARTIFACT_DIR] (ctest passes build/artifacts).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"
ART=${3:-$T}
mkdir -p "$ART"
ART=$(cd "$ART" && pwd)

CHROMIUM=$(command -v chromium || true)
[[ -n $CHROMIUM ]] || fail "chromium is not installed (the HTML heat map is checked in a headless browser): run bash deploy/install_deps.sh"

FORTUNES=/usr/share/games/fortunes/fortunes
[[ -f $FORTUNES ]] || fail "no $FORTUNES (Debian's fortunes-min): run bash deploy/install_deps.sh"
run_ok "$CR" prepare --input "$FORTUNES" --tokenizer char --out data
run_ok "$CR" train "$TINY" --set run.dir=run --set train.max_steps=60 --set run.eval_every=0
# The first four fortunes (the file separates them with lines holding "%").
awk '/^%$/ { if (++n == 4) exit; print ""; next } { print }' "$FORTUNES" >few.txt
run_ok "$CR" score run --input few.txt --html heatmap.html --color never
grep -q '^bits/token ' "$T/.run_ok.out" || fail "score printed no totals"

mkdir profile
rc=0
timeout -k 5 60 "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --no-first-run --user-data-dir="$T/profile" --screenshot="$T/shot.png" --window-size=1000,700 \
  "file://$T/heatmap.html" >chromium.log 2>&1 || rc=$?
[[ $rc -eq 0 && -s shot.png ]] || fail "chromium exited $rc without a screenshot:
$(tail -n 20 chromium.log)"
cp shot.png "$ART/score_heatmap.png"
cp heatmap.html "$ART/score_heatmap.html"
note "screenshot: $ART/score_heatmap.png (page: $ART/score_heatmap.html)"

"$PY" - shot.png heatmap.html <<'EOF'
import re, struct, sys, zlib
import numpy as np

def fail(m):
    sys.exit("FAIL: " + m)

def read_png(path):
    """An 8-bit RGB or RGBA, non-interlaced PNG as uint8 [h, w, 3] (PNG spec, section 9 filters)."""
    d = open(path, "rb").read()
    if d[:8] != b"\x89PNG\r\n\x1a\n":
        fail("%s is not a PNG" % path)
    pos, idat, hdr = 8, [], None
    while pos < len(d):
        n, = struct.unpack(">I", d[pos:pos + 4])
        typ, body = d[pos + 4:pos + 8], d[pos + 8:pos + 8 + n]
        pos += 12 + n
        if typ == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif typ == b"IDAT":
            idat.append(body)
    w, h, depth, ctype, _, _, interlace = hdr
    if depth != 8 or ctype not in (2, 6) or interlace:
        fail("PNG depth %d, colour type %d, interlace %d: expected 8-bit RGB(A), not interlaced"
             % (depth, ctype, interlace))
    bpp = 3 if ctype == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(h, w * bpp + 1)
    out = np.zeros((h, w * bpp), np.int32)
    prev = np.zeros(w * bpp, np.int32)
    for y in range(h):
        f, row = raw[y, 0], raw[y, 1:].astype(np.int32)
        if f == 0:
            cur = row
        elif f == 1:  # Sub: a running sum along each channel
            cur = np.cumsum(row.reshape(w, bpp), axis=0).reshape(-1) & 255
        elif f == 2:  # Up
            cur = (row + prev) & 255
        else:  # Average and Paeth depend on the byte to the left: sequential
            cur, r, p = [0] * (w * bpp), row.tolist(), prev.tolist()
            for i in range(w * bpp):
                a = cur[i - bpp] if i >= bpp else 0
                b = p[i]
                if f == 3:
                    cur[i] = (r[i] + ((a + b) >> 1)) & 255
                else:
                    c = p[i - bpp] if i >= bpp else 0
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    cur[i] = (r[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            cur = np.array(cur, np.int32)
        out[y], prev = cur, cur
    return out.reshape(h, w, bpp)[:, :, :3]

img = read_png(sys.argv[1])
page = open(sys.argv[2], encoding="utf-8").read()
scale = [(int(k), tuple(int(c[i:i + 2], 16) for i in (0, 2, 4)))
         for k, c in re.findall(r"\.s([0-9])\{background:#([0-9a-f]{6})", page)]
if len(scale) < 5:
    fail("the page's CSS defines %d heat colours" % len(scale))
# The text starts under its top rule (#ccc): count only there, not in the legend.
rule = np.where(((img == 204).all(axis=2)).sum(axis=1) > img.shape[1] // 2)[0]
if len(rule) == 0:
    fail("no horizontal rule above the text in the screenshot (is the page blank?)")
text = img[rule[-1] + 1:]
counts = {k: int((text == np.array(rgb)).all(axis=2).sum()) for k, rgb in scale}
big = {k: n for k, n in counts.items() if n >= 1500}
print("-- heat colour pixels under the rule (bin: pixels): %s" % counts)
if len(big) < 3:
    fail("only %d heat colours cover >= 1500 pixels of the text: %s" % (len(big), counts))
EOF
