#!/usr/bin/python3
"""Compares two chainrule runs: per-step training losses and the final (gathered) weights.

Usage: compare_runs.py REF_RUN RUN LOSS_TOL WEIGHT_TOL
Prints the loss gap step by step (so growth from reduction-order rounding is visible) and the
worst weight gap, relative per tensor (max |a-b| / max |a|). Exit 0 when both are within
tolerance, 1 otherwise.

The key bias (the middle third of attn.c_attn.bias) is left out of the weight comparison: adding
a constant to every key shifts all scores of a query equally, so softmax ignores it and its true
gradient is exactly 0. What backward computes there is rounding noise, which Adam normalises
into lr-sized steps of random sign: its value differs between any two reduction orders and has
no effect on the model's output.
"""
import json
import struct
import sys

import numpy as np


def losses(run):
    with open(f"{run}/metrics.jsonl") as f:
        return [json.loads(l)["loss"] for l in f if '"type":"train"' in l]


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
        out[k] = np.frombuffer(data[b:e], dtype=np.float32).reshape(v["shape"])
    return out


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: compare_runs.py REF_RUN RUN LOSS_TOL WEIGHT_TOL")
    ref, run, loss_tol, weight_tol = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    a, b = losses(ref), losses(run)
    if len(a) != len(b) or not a:
        print(f"FAIL: {len(a)} vs {len(b)} training steps")
        return 1
    gaps = [abs(x - y) / abs(x) for x, y in zip(a, b)]
    print("loss gap by step: " + " ".join(f"{g:.1e}" for g in gaps))
    ta, tb = tensors(ref), tensors(run)
    if ta.keys() != tb.keys():
        print("FAIL: different tensors")
        return 1
    wgap, worst = 0.0, ""
    for k in ta:
        if k.endswith("attn.c_attn.bias"):
            c = ta[k].shape[0] // 3
            ta[k] = np.concatenate([ta[k][:c], ta[k][2 * c:]])
            tb[k] = np.concatenate([tb[k][:c], tb[k][2 * c:]])
        g = float(np.max(np.abs(ta[k] - tb[k])) / max(np.max(np.abs(ta[k])), 1e-30))
        if g > wgap:
            wgap, worst = g, k
    print(f"max loss gap {max(gaps):.2e} (tol {loss_tol:.0e}); max weight gap {wgap:.2e} in {worst} (tol {weight_tol:.0e})")
    ok = max(gaps) <= loss_tol and wgap <= weight_tol
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
