#!/usr/bin/python3
"""Compares two chainrule runs: per-step training losses and the final (gathered) weights.

Usage: compare_runs.py REF_RUN RUN LOSS_TOL WEIGHT_TOL [--steps FIRST[:LAST]] [--norms TOL]
With --steps only those steps' losses are compared (a resumed run's metrics.jsonl holds several
attempts: the last record of a step wins). With --norms the per-layer parameter and gradient
norms ("norms" lines) must be recorded at the same steps and agree within TOL, relative.
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
    by_step = {}
    with open(f"{run}/metrics.jsonl") as f:
        for line in f:
            j = json.loads(line)
            if j.get("type") == "train":
                by_step[j["step"]] = j["loss"]
    return by_step


def norms(run):
    """{step: {"param/GROUP": norm, "grad/GROUP": norm}} from the "norms" lines."""
    by_step = {}
    with open(f"{run}/metrics.jsonl") as f:
        for line in f:
            j = json.loads(line)
            if j.get("type") == "norms":
                by_step[j["step"]] = {f"{kind}/{g}": v for kind in ("param", "grad") for g, v in j[kind].items()}
    return by_step


def norms_ok(ref, run, tol):
    """The worst relative gap of the per-layer norms, printed; False when over tol or unmatched."""
    na, nb = norms(ref), norms(run)
    if not na or na.keys() != nb.keys() or any(na[s].keys() != nb[s].keys() for s in na):
        print(f"FAIL: norms at steps {sorted(na)} vs {sorted(nb)}")
        return False
    gap, worst = max((abs(na[s][k] - nb[s][k]) / max(abs(na[s][k]), 1e-30), f"{k} at step {s}")
                     for s in na for k in na[s])
    print(f"max per-layer norm gap {gap:.2e} in {worst} (tol {tol:.0e}; {sum(map(len, na.values()))} norms)")
    return gap <= tol


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
    args = sys.argv[1:]
    opts = {}
    while len(args) > 4 and args[-2] in ("--steps", "--norms") and args[-2] not in opts:
        opts[args[-2]] = args[-1]
        args = args[:-2]
    if len(args) != 4:
        sys.exit("usage: compare_runs.py REF_RUN RUN LOSS_TOL WEIGHT_TOL [--steps FIRST[:LAST]] [--norms TOL]")
    ref, run, loss_tol, weight_tol = args[0], args[1], float(args[2]), float(args[3])
    la, lb = losses(ref), losses(run)
    if "--steps" in opts:
        first, _, last = opts["--steps"].partition(":")
        steps = list(range(int(first), int(last or first) + 1))
    else:
        steps = sorted(la)
    if not steps or any(s not in la or s not in lb for s in steps) or ("--steps" not in opts and la.keys() != lb.keys()):
        print(f"FAIL: steps {sorted(la)} vs {sorted(lb)} (compared: {steps})")
        return 1
    a, b = [la[s] for s in steps], [lb[s] for s in steps]
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
    if "--norms" in opts:
        ok = norms_ok(ref, run, float(opts["--norms"])) and ok
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
