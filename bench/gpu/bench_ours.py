#!/usr/bin/env python3
"""Our side of the GPU benchmark: chainrule trains the models of models.py (GPT-2 124M and a
Llama-style model of similar size) in bf16 at T=1024 on the GPU, a few steps each; tokens/s is
the median of chainrule's own per-step figure (metrics.jsonl: global batch x T / the step's wall
time, which covers data loading, forward, backward, gradient clipping and AdamW) over the steps
after the warm-up. Prints one BENCH line per model (models.report), as torch_baseline.py does.

Usage: bench_ours.py --chainrule BIN [--model gpt2|llama|all] [--batch 16] [--T 1024]
                     [--steps 8] [--warmup 3] [--dtype bf16] [--workdir DIR]
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402


def make_data(bin_, workdir):
    """About 2 MB of byte-level text: enough windows of 1025 tokens for any batch here. The ids
    (< 256) live in the models' larger vocabularies; throughput does not depend on them."""
    data = os.path.join(workdir, "data")
    if os.path.exists(os.path.join(data, "dataset.json")):
        return data
    r = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "in", "park", "one", "two"]
    text = os.path.join(workdir, "corpus.txt")
    with open(text, "w") as f:
        for _ in range(60000):
            f.write(" ".join(r.choice(words) for _ in range(8)) + ".\n")
    subprocess.run([bin_, "prepare", "--input", text, "--tokenizer", "byte", "--out", data],
                   check=True, stdout=subprocess.DEVNULL)
    return data


def config_yaml(m, args, data, run_dir):
    model = {k: m[k] for k in ("family", "n_layer", "n_head", "n_embd", "block_size", "vocab_size")}
    model["block_size"] = args.T
    if m["family"] == "llama":  # gpt2 takes its defaults (4C MLP, tied head, biases, MHA)
        model.update(n_kv_head=m["n_kv_head"], ffn_hidden=m["ffn_hidden"])
    steps = args.warmup + args.steps
    return json.dumps({  # JSON is YAML
        "model": model,
        "train": {"global_batch": args.batch, "micro_batch": args.batch, "max_steps": steps,
                  "lr": 3e-4, "min_lr": 3e-5, "warmup_steps": 2, "weight_decay": 0.1,
                  "grad_clip": 1.0, "seed": 1, "device": "cuda", "dtype": args.dtype},
        "data": {"dir": data},
        "run": {"dir": run_dir, "log_every": 1, "eval_every": 0, "eval_batches": 1,
                "final_eval_tokens": args.T},
        "parallel": {"tensor": 1},
    }, indent=1)


def bench(name, args, data, device_name):
    m = models.MODELS[name]
    run_dir = os.path.join(args.workdir, f"run_{name}")
    cfg = os.path.join(args.workdir, f"{name}.yaml")
    with open(cfg, "w") as f:
        f.write(config_yaml(m, args, data, run_dir))
    log = os.path.join(args.workdir, f"{name}.log")
    with open(log, "w") as f:
        rc = subprocess.run([args.chainrule, "train", cfg], stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = open(log).read().strip().splitlines()[-3:]
        print(f"BENCH impl=ours model={name} error=exit_{rc}: {' / '.join(tail)[:300]}", flush=True)
        return 1
    steps = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    steps = [s for s in steps if s.get("type") == "train" and s["step"] > args.warmup]
    tps = statistics.median(s["tokens_per_s"] for s in steps)
    ms = statistics.median(s["ms_per_step"] for s in steps)
    models.report("ours", name, tps, ms, args.T, device_name, f"dtype={args.dtype}")
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chainrule", required=True)
    ap.add_argument("--model", default="all", choices=["gpt2", "llama", "all"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--T", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--workdir")
    args = ap.parse_args()
    args.chainrule = os.path.abspath(args.chainrule)
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="chainrule-bench.")
    os.makedirs(args.workdir, exist_ok=True)
    device_name = models.gpu_name()
    if not device_name:
        print("bench_ours: skipped: nvidia-smi names no GPU")
        return 77
    data = make_data(args.chainrule, args.workdir)
    status = 0
    for name in (["gpt2", "llama"] if args.model == "all" else [args.model]):
        status |= bench(name, args, data, device_name)
    return status


if __name__ == "__main__":
    sys.exit(main())
