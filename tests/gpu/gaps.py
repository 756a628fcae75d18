#!/usr/bin/env python3
"""Compares two chainrule runs: per-step training losses and the final weights.

Usage: gaps.py REF_RUN RUN LOSS_TOL WEIGHT_TOL LABEL
The same measures as tests/dist/compare_runs.py (loss gap |a-b|/|a| per step; weight gap per
tensor max|a-b| / max|a|, the key bias left out: see there why), in plain Python: the GPU machine
has PyTorch but maybe not numpy. WEIGHT_TOL <= 0 reports the weight gap without checking it.
Prints the gaps by step, then one parseable line
  GAP label=LABEL loss_gap=.. loss_tol=.. weight_gap=.. weight_tol=.. worst=TENSOR result=PASS|FAIL
Exit 0 on PASS, 1 on FAIL.
"""
import array
import json
import struct
import sys


def losses(run):
    by_step = {}
    with open(f"{run}/metrics.jsonl") as f:
        for line in f:
            j = json.loads(line)
            if j.get("type") == "train":
                by_step[j["step"]] = j["loss"]
    return by_step


def tensors(run):
    with open(f"{run}/model.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        if v["dtype"] == "F32":
            a = array.array("f", data[b:e])
        elif v["dtype"] == "BF16":  # widen: bf16 is the top half of an f32
            h = array.array("H", data[b:e])
            a = array.array("f", struct.pack(f"<{len(h)}I", *[x << 16 for x in h]))
        else:
            raise SystemExit(f"{run}: {k} has dtype {v['dtype']}")
        if sys.byteorder != "little":
            a.byteswap()
        if k.endswith("attn.c_attn.bias"):
            c = len(a) // 3
            a = a[:c] + a[2 * c:]
        out[k] = a
    return out


def main():
    if len(sys.argv) != 6:
        sys.exit("usage: gaps.py REF_RUN RUN LOSS_TOL WEIGHT_TOL LABEL")
    ref, run, loss_tol, weight_tol, label = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    la, lb = losses(ref), losses(run)
    if not la or la.keys() != lb.keys():
        print(f"FAIL: steps {sorted(la)} vs {sorted(lb)}")
        print(f"GAP label={label} loss_gap=nan loss_tol={loss_tol:.0e} weight_gap=nan weight_tol={weight_tol:.0e} worst=- result=FAIL")
        return 1
    steps = sorted(la)
    gaps = [abs(la[s] - lb[s]) / max(abs(la[s]), 1e-30) for s in steps]
    print("loss gap by step: " + " ".join(f"{g:.1e}" for g in gaps))
    ta, tb = tensors(ref), tensors(run)
    wgap, worst = 0.0, "-"
    if ta.keys() != tb.keys():
        print("FAIL: different tensors")
        wgap = float("inf")
    else:
        for k in ta:
            scale = max((abs(x) for x in ta[k]), default=0.0)
            g = max((abs(x - y) for x, y in zip(ta[k], tb[k])), default=0.0) / max(scale, 1e-30)
            if g > wgap:
                wgap, worst = g, k
    ok = max(gaps) <= loss_tol and (weight_tol <= 0 or wgap <= weight_tol)
    print(f"GAP label={label} loss_gap={max(gaps):.2e} loss_tol={loss_tol:.0e} weight_gap={wgap:.2e} "
          f"weight_tol={weight_tol:.0e} worst={worst} result={'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
