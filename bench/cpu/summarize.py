#!/usr/bin/python3
"""Prints bench/cpu/run.sh's table from its JSON lines (one per engine, condition, config)."""
import json
import sys


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    ceilings = {(r["config"], r["B"], r["T"], r["condition"]): r["sgemm_ceiling_gflops"]
                for r in rows if r["engine"] == "chainrule"}
    best_ceiling = {}
    for (cfg, b, t, _), g in ceilings.items():
        best_ceiling[(cfg, b, t)] = max(best_ceiling.get((cfg, b, t), 0), g)
    print(f"{'config':<18} {'engine':<10} {'condition':<14} {'tok/s':>7} {'ms/step':>8} "
          f"{'fwd':>6} {'bwd':>6} {'opt':>5} {'GFLOP/s':>8} {'ceiling':>8} {'MFU':>5} "
          f"{'RSS MB':>7} {'vs torch best':>13}")
    for key in dict.fromkeys((r["config"], r["B"], r["T"]) for r in rows):
        group = [r for r in rows if (r["config"], r["B"], r["T"]) == key]
        torch_best = max((r["tokens_per_s"] for r in group if r["engine"] == "pytorch"), default=0)
        for r in group:
            ceiling = ceilings.get(key + (r["condition"],), best_ceiling.get(key, 0))
            ratio = r["tokens_per_s"] / torch_best if torch_best else float("nan")
            print(f"{r['config'] + ' B' + str(r['B']) + ' T' + str(r['T']):<18} {r['engine']:<10} "
                  f"{r['condition']:<14} {r['tokens_per_s']:>7.1f} {r['ms_step']:>8.0f} "
                  f"{r['ms_fwd']:>6.0f} {r['ms_bwd']:>6.0f} {r['ms_opt']:>5.0f} "
                  f"{r['gflops']:>8.1f} {ceiling:>8.1f} {r['gflops'] / ceiling:>5.0%} "
                  f"{r['peak_rss_mb']:>7.0f} {ratio:>12.2f}x")
    print("ceiling: GFLOP/s of the step's GEMMs through chainrule's GEMM engine in that condition "
          "(the best of them for PyTorch's unset+passive row); MFU = model GFLOP/s / ceiling")


if __name__ == "__main__":
    main()
