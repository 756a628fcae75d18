#!/usr/bin/env python3
"""summarize.py: turn the TSV rows of gemm_bench_* runs into one GFLOP/s table.

Usage: summarize.py RESULTS.tsv [MORE.tsv ...] [CONDITION ...]
(several result files, e.g. from repeated run.sh invocations, are merged as extra passes)
Each TSV row (written by gemm_engines.cpp --tsv, with the pass number prepended by run.sh):
  pass label engine rows layer kind M N K threads count median_s gflops foreign
Per (condition, shape) the best pass counts (interference only slows a run down). The
whole-step ceiling is recomputed from those best times: sum(2*M*N*K*count) / sum(t*count) over
the 12 layers x 4 GEMMs x 3 (fwd, dinp, dW) + the LM head's 3. The spread between passes and the
CPU share other processes took are printed underneath, as a noise report.
"""
import collections
import sys


def main():
    paths = [a for a in sys.argv[1:] if a.endswith(".tsv")]
    order = [a for a in sys.argv[1:] if not a.endswith(".tsv")]
    rows = []
    for fi, path in enumerate(paths):
        with open(path) as f:
            for line in f:
                p = line.rstrip("\n").split("\t")
                if len(p) < 14:
                    continue
                rows.append(dict(pass_=f"{fi}.{p[0]}", label=p[1], engine=p[2], rows=int(p[3].split("=")[1]),
                                 layer=p[4], kind=p[5], M=int(p[6]), N=int(p[7]), K=int(p[8]),
                                 thr=int(p[9]), count=int(p[10]), t=float(p[11]), gf=float(p[12]),
                                 foreign=float(p[13])))
    labels = order or sorted({r["label"] for r in rows})
    labels = [l for l in labels if any(r["label"] == l for r in rows)]

    # best[label][shape] = (t, gf, foreign); per_pass[label][(rows,thr)][pass] = step time
    best = collections.defaultdict(dict)
    shapes = []  # in first-seen order
    foreign_max = collections.defaultdict(float)
    pass_times = collections.defaultdict(lambda: collections.defaultdict(dict))
    for r in rows:
        if r["layer"] == "STEP":
            pass_times[r["label"]][(r["rows"], r["thr"])][r["pass_"]] = r["gf"]
            continue
        key = (r["rows"], r["thr"], r["layer"], r["kind"], r["M"], r["N"], r["K"], r["count"])
        if key not in shapes:
            shapes.append(key)
        cur = best[r["label"]].get(key)
        if cur is None or r["t"] < cur[0]:
            best[r["label"]][key] = (r["t"], r["gf"], r["foreign"])
        foreign_max[r["label"]] = max(foreign_max[r["label"]], r["foreign"])

    w = max(11, max(len(l) for l in labels) + 1)
    head = f"{'shape (rows=B*T, threads)':<44}" + "".join(f"{l:>{w}}" for l in labels)
    print("GFLOP/s, median of >=5 timed calls, best of the passes")
    print(head)
    print("-" * len(head))
    groups = []
    for key in shapes:
        g = (key[0], key[1])
        if g not in groups:
            groups.append(g)
    for g in groups:
        for key in [k for k in shapes if (k[0], k[1]) == g]:
            n, thr, layer, kind, M, N, K, cnt = key
            tr = {"fwd": "NT", "dinp": "NN", "dW": "TN"}[kind]
            name = f"N={n} {thr}t {layer:<7} {kind:<4} {tr} {M}x{N}x{K}"
            cells = []
            for l in labels:
                v = best[l].get(key)
                cells.append(f"{v[1]:>{w}.1f}" if v else f"{'-':>{w}}")
            print(f"{name:<44}" + "".join(cells))
        # ceiling from the best per-shape times (only when the group is a full step)
        keys = [k for k in shapes if (k[0], k[1]) == g]
        if len(keys) == 15:
            cells = []
            for l in labels:
                if all(k in best[l] for k in keys):
                    fl = sum(2.0 * k[4] * k[5] * k[6] * k[7] for k in keys)
                    t = sum(best[l][k][0] * k[7] for k in keys)
                    cells.append(f"{fl / t * 1e-9:>{w}.1f}")
                else:
                    cells.append(f"{'-':>{w}}")
            name = f"N={g[0]} {g[1]}t WHOLE-STEP sgemm ceiling"
            print(f"{name:<44}" + "".join(cells))
            fl = sum(2.0 * k[4] * k[5] * k[6] * k[7] for k in keys)
            print(f"{'  (' + format(fl * 1e-9, '.1f') + ' GFLOP of GEMMs per step)':<44}")
        print()

    print("noise: whole-step ceiling of each pass (GFLOP/s), max CPU share other processes "
          "took during any one shape")
    for l in labels:
        parts = []
        for g, d in sorted(pass_times[l].items(), reverse=True):
            vals = [d[p] for p in sorted(d)]
            spread = (max(vals) - min(vals)) / max(vals) * 100 if vals else 0
            parts.append(f"N={g[0]} {g[1]}t: " + " / ".join(f"{v:.1f}" for v in vals) +
                         f" ({spread:.0f}% spread)")
        print(f"  {l:<{w}} " + "; ".join(parts) + f"; other procs max {foreign_max[l] * 100:.0f}%")


if __name__ == "__main__":
    main()
