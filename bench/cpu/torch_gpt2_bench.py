#!/usr/bin/python3
"""PyTorch baseline for chainrule's end-to-end CPU training benchmark.

Trains, in fp32 on the CPU, the same GPT-2 that chainrule trains (it mirrors core/model/gpt.cpp,
core/model/config.h and core/optim/adamw.cpp) with the same shapes and the same work per step:

  * pre-LayerNorm blocks: x += proj(attn(qkv(ln_1(x)))); x += proj(gelu_tanh(fc(ln_2(x))))
    qkv = Linear(C, 3C) with bias (q|k|v stacked, like our [3, C, C]), causal softmax attention
    scaled by 1/sqrt(head_size), no dropout, LayerNorm eps 1e-5;
  * learned positions wpe [block_size, C] (block_size defaults to T: our trainer trains at
    T = block_size); token embedding wte padded to a multiple of 64 rows (50257 -> 50304) and
    tied to the LM head, so the LM-head matmul runs over the padded rows; the padded logits are
    sliced off before the loss (mean cross-entropy over all B*T positions);
  * GPT-2 init: N(0, 0.02), *.proj.weight scaled by 1/sqrt(2 n_layer), zero biases, unit LN gains,
    zero padded rows;
  * AdamW(lr 6e-4, betas (0.9, 0.95), eps 1e-8), weight decay 0.1 on wte and the matmul weights
    only (like ParamLayout's decay flags: wpe, biases and LayerNorms get none), after global
    grad-norm clipping at 1.0.

Known differences from chainrule (they change time, not the FLOP count we report):
  * PyTorch 1.13 has no fused attention: it materialises the B*H*T*T scores and computes the
    masked upper triangle too; chainrule's attention is blocked and skips it.
  * The step's phases are timed as forward (incl. loss), backward, optimizer
    (clip + step + zero_grad); chainrule zeroes its gradient buffer at the start of the step.

Timing: --warmup untimed steps, then --steps timed ones; medians are reported. One JSON line goes
to stdout (for the C++-side harness), everything else to stderr. FLOPs per token use the
definition shared with the C++ side:
    flops_per_token = 6 * N + 12 * n_layer * n_embd * T
with N = all parameters including the padded wte, excluding wpe.

Run with Debian's interpreter (it has python3-torch 1.13):
    /usr/bin/python3 bench/cpu/torch_gpt2_bench.py --config gpt2-124m --batch 8 --seq 256
    /usr/bin/python3 bench/cpu/torch_gpt2_bench.py --config char            # B 16, T 256
"""
import argparse
import ctypes
import inspect
import json
import math
import os
import platform
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    # name: model shape and default batch/sequence
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, batch=8, seq=256),
    "char": dict(n_layer=6, n_head=6, n_embd=384, vocab_size=113, batch=16, seq=256),
}
ENV_KEYS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
            "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_PROC_BIND", "OMP_PLACES")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def padded_vocab(v):  # config.h: ModelConfig::padded_vocab (tp 1)
    return (v + 63) // 64 * 64


# ------------------------------------------------------------------------------------------------
# The model

class Attention(nn.Module):
    def __init__(self, n_embd, n_head, block_size):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        mask = torch.ones(block_size, block_size, dtype=torch.bool).triu(1)  # True: future
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        H = self.n_head
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, H, C // H).transpose(1, 2)  # [B, H, T, hs]
        k = k.view(B, T, H, C // H).transpose(1, 2)
        v = v.view(B, T, H, C // H).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // H))
        att = att.masked_fill(self.mask[:T, :T], float("-inf"))
        y = F.softmax(att, dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, block_size):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, eps=1e-5)
        self.attn = Attention(n_embd, n_head, block_size)
        self.ln_2 = nn.LayerNorm(n_embd, eps=1e-5)
        self.mlp = MLP(n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Parameter names follow chainrule's ParamLayout (wte, wpe, h.L.attn.qkv.weight, ...)."""

    def __init__(self, n_layer, n_head, n_embd, vocab_size, block_size):
        super().__init__()
        self.vocab_size, self.n_layer, self.n_embd = vocab_size, n_layer, n_embd
        self.wte = nn.Parameter(torch.empty(padded_vocab(vocab_size), n_embd))
        self.wpe = nn.Parameter(torch.empty(block_size, n_embd))
        self.h = nn.ModuleList(Block(n_embd, n_head, block_size) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):  # GPT::init
        residual_std = 0.02 / math.sqrt(2 * self.n_layer)
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
            elif "ln_" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, residual_std if name.endswith(".proj.weight") else 0.02)
        self.wte[self.vocab_size:].zero_()  # padded vocabulary rows

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = F.embedding(idx, self.wte) + self.wpe[:T]
        for block in self.h:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte)  # [B, T, Vp]: the LM head over padded rows
        logits = logits[..., :self.vocab_size]     # padded logits take no part in the loss
        return F.cross_entropy(logits.reshape(-1, self.vocab_size), targets.reshape(-1))


# ------------------------------------------------------------------------------------------------
# Environment: which BLAS runs the matmuls, threads

def loaded_libs(*needles):
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                if any(n in os.path.basename(path) for n in needles):
                    libs.add(os.path.realpath(path))
    except OSError:
        pass
    return sorted(libs)


def openblas_handle():
    """The OpenBLAS that torch's libblas.so.3 resolved to, if any (already loaded: same handle)."""
    for path in loaded_libs("openblas"):
        try:
            lib = ctypes.CDLL(path)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            lib.openblas_get_config.restype = ctypes.c_char_p
            return path, lib
        except (OSError, AttributeError):
            continue
    return None, None


def blas_info(build_config):
    info = {"build": next((s.split("=", 1)[1] for s in build_config.replace(",", " ").split()
                           if s.startswith("BLAS_INFO=")), None),
            "libs": loaded_libs("blas", "blis", "mkl_rt", "dnnl")}
    path, ob = openblas_handle()
    if ob is not None:
        info.update(openblas=path, openblas_core=ob.openblas_get_corename().decode(),
                    openblas_config=ob.openblas_get_config().decode(),
                    openblas_threads=ob.openblas_get_num_threads())
    return info


def cpu_times():
    """(busy, steal) jiffies of the whole machine from /proc/stat, and this process's CPU s."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = sum(v[:3]) + sum(v[5:8])  # user nice system irq softirq steal
        steal = v[7] if len(v) > 7 else 0
    except (OSError, ValueError):
        busy = steal = 0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return busy, steal, ru.ru_utime + ru.ru_stime


def gemm_probe(n_rows, c, reps=5):
    """GFLOP/s of one fp32 F.linear of the MLP's fc shape: [n_rows, C] x [4C, C]^T."""
    x, w = torch.randn(n_rows, c), torch.randn(4 * c, c)
    F.linear(x, w)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        F.linear(x, w)
        times.append(time.perf_counter() - t0)
    return 2.0 * n_rows * c * 4 * c / statistics.median(times) / 1e9


# ------------------------------------------------------------------------------------------------

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="gpt2-124m")
    ap.add_argument("--batch", "-B", type=int, help="sequences per step (default: the config's)")
    ap.add_argument("--seq", "-T", type=int, help="sequence length T (default: the config's)")
    ap.add_argument("--block-size", type=int, help="wpe rows (default: T, as our trainer)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="torch.set_num_threads (default: os.cpu_count())")
    ap.add_argument("--blas-threads", type=int,
                    help="OpenBLAS threads (default: --threads; 0: leave OpenBLAS's own choice)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--adamw", choices=("foreach", "loop"), default="foreach",
                    help="torch.optim.AdamW implementation (foreach falls back to loop if absent)")
    ap.add_argument("--zero-grad", choices=("none", "zero"), default="none",
                    help="zero_grad(set_to_none=True) or zero the gradient tensors in place")
    ap.add_argument("--no-probe", action="store_true", help="skip the sgemm GFLOP/s probe")
    args = ap.parse_args()
    cfg = CONFIGS[args.config]
    args.batch = args.batch or cfg["batch"]
    args.seq = args.seq or cfg["seq"]
    args.block_size = args.block_size or args.seq
    if args.block_size < args.seq:
        ap.error(f"--block-size {args.block_size} < --seq {args.seq}")
    if args.blas_threads is None:
        args.blas_threads = args.threads
    if args.steps < 1 or args.threads < 1:
        ap.error("--steps and --threads must be >= 1")
    return args, cfg


def main():
    args, cfg = parse_args()
    B, T = args.batch, args.seq
    L, H, C, V = cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["vocab_size"]

    torch.set_num_threads(args.threads)
    build_config = torch.__config__.show()
    _, ob = openblas_handle()
    if ob is not None and args.blas_threads > 0:
        ob.openblas_set_num_threads(args.blas_threads)
    parallel = next((l.strip() for l in torch.__config__.parallel_info().splitlines()
                     if l.startswith("ATen parallel backend")), "?")
    blas = blas_info(build_config)
    mkldnn = {"available": torch.backends.mkldnn.is_available(),
              "enabled": torch.backends.mkldnn.enabled}

    torch.manual_seed(args.seed)
    model = GPT(L, H, C, V, args.block_size)
    gen = torch.Generator().manual_seed(args.seed)
    tokens = torch.randint(0, V, (B, T + 1), generator=gen)
    inputs, targets = tokens[:, :T].contiguous(), tokens[:, 1:].contiguous()

    n_params = sum(p.numel() for p in model.parameters())
    n_flops_params = n_params - model.wpe.numel()  # wpe has no matmul
    flops_per_token = 6 * n_flops_params + 12 * L * C * T

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and n != "wpe"]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and n != "wpe")]
    has_foreach = "foreach" in inspect.signature(torch.optim.AdamW).parameters
    adamw_impl = "foreach" if args.adamw == "foreach" and has_foreach else "loop"
    opt_kwargs = {"foreach": adamw_impl == "foreach"} if has_foreach else {}
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), eps=1e-8, **opt_kwargs)
    params = list(model.parameters())

    log(f"torch {torch.__version__} | python {platform.python_version()} | {parallel} | "
        f"threads {torch.get_num_threads()} | mkldnn {mkldnn}")
    log(f"BLAS: build {blas['build']}, loaded {', '.join(blas['libs']) or 'none found'}")
    if "openblas_core" in blas:
        log(f"OpenBLAS core {blas['openblas_core']}, threads {blas['openblas_threads']} "
            f"({blas['openblas_config']})")
    log("env: " + ", ".join(f"{k}={os.environ.get(k, '-')}" for k in ENV_KEYS))
    log(f"model {args.config}: L={L} H={H} C={C} V={V} (padded {padded_vocab(V)}) "
        f"block_size={args.block_size} | params {n_params:,} (without wpe {n_flops_params:,}) | "
        f"B={B} T={T} | {flops_per_token / 1e9:.3f} GFLOP/token | "
        f"AdamW {adamw_impl} | zero_grad {args.zero_grad}")

    gemm_gflops = None
    if not args.no_probe:
        gemm_gflops = gemm_probe(B * T, C)
        log(f"sgemm probe [{B * T}x{C}] x [{C}x{4 * C}]: {gemm_gflops:.1f} GFLOP/s")

    fwd, bwd, optim, step_t, losses = [], [], [], [], []
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            cpu0, wall0 = cpu_times(), time.perf_counter()
        t0 = time.perf_counter()
        loss = model(inputs, targets)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if args.zero_grad == "none":
            opt.zero_grad(set_to_none=True)
        else:
            opt.zero_grad(set_to_none=False)
        t3 = time.perf_counter()
        timed = i >= args.warmup
        if timed:
            fwd.append(t1 - t0), bwd.append(t2 - t1), optim.append(t3 - t2)
            step_t.append(t3 - t0)
        losses.append(loss.item())
        log(f"{'step' if timed else 'warmup'} {i + 1}: loss {loss.item():.4f} | "
            f"norm {norm.item():.3f} | fwd {(t1 - t0) * 1e3:.0f} ms, bwd {(t2 - t1) * 1e3:.0f} ms, "
            f"opt {(t3 - t2) * 1e3:.0f} ms | step {(t3 - t0) * 1e3:.0f} ms")

    # Contention check: the share of the machine's CPU time that went to anything but us
    # (other processes, steal) while the timed steps ran.
    cpu1, wall = cpu_times(), time.perf_counter() - wall0
    hz, ncpu = os.sysconf("SC_CLK_TCK"), os.cpu_count()
    own = (cpu1[2] - cpu0[2]) / (wall * ncpu)
    machine = (cpu1[0] - cpu0[0]) / hz / (wall * ncpu)
    others = max(0.0, machine - own)
    steal = (cpu1[1] - cpu0[1]) / hz / (wall * ncpu)
    med = statistics.median
    ms_step = med(step_t) * 1e3
    tokens_per_s = B * T / med(step_t)
    gflops = flops_per_token * tokens_per_s / 1e9
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log(f"median: step {ms_step:.1f} ms (fwd {med(fwd) * 1e3:.1f}, bwd {med(bwd) * 1e3:.1f}, "
        f"opt {med(optim) * 1e3:.1f}) | {tokens_per_s:,.0f} tok/s | {gflops:.1f} GFLOP/s | "
        f"peak RSS {peak_rss_mb:,.0f} MB")
    log(f"CPU while timed: this process {own:.0%} of {ncpu} CPUs, others {others:.0%}, "
        f"steal {steal:.0%}" + (" (contended: numbers are pessimistic)" if others > 0.05 else ""))

    print(json.dumps({
        "engine": "pytorch", "torch": torch.__version__, "config": args.config,
        "B": B, "T": T, "block_size": args.block_size,
        "n_layer": L, "n_head": H, "n_embd": C, "vocab": V, "vocab_padded": padded_vocab(V),
        "threads": torch.get_num_threads(), "params": n_params, "params_flops": n_flops_params,
        "flops_per_token": flops_per_token, "warmup": args.warmup, "steps": args.steps,
        "tokens_per_s": round(tokens_per_s, 2), "ms_step": round(ms_step, 3),
        "ms_fwd": round(med(fwd) * 1e3, 3), "ms_bwd": round(med(bwd) * 1e3, 3),
        "ms_opt": round(med(optim) * 1e3, 3), "ms_step_min": round(min(step_t) * 1e3, 3),
        "gflops": round(gflops, 3), "peak_rss_mb": round(peak_rss_mb, 1),
        "cpu_own_frac": round(own, 3), "cpu_others_frac": round(others, 3),
        "cpu_steal_frac": round(steal, 3),
        "loss_first": round(losses[0], 5), "loss_last": round(losses[-1], 5),
        "adamw": adamw_impl, "zero_grad": "set_to_none" if args.zero_grad == "none" else "zero",
        "parallel": parallel, "mkldnn": mkldnn, "blas": blas,
        "gemm_probe_gflops": None if gemm_gflops is None else round(gemm_gflops, 2),
        "env": {k: os.environ.get(k) for k in ENV_KEYS},
    }), flush=True)


if __name__ == "__main__":
    main()
