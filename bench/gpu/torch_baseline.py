#!/usr/bin/env python3
"""The PyTorch baseline of the GPU benchmark: the two models of models.py written in plain torch
(no transformers: the GPU machine has no network), trained with torch.compile, bf16 autocast
over fp32 master weights (as chainrule's train.dtype: bf16 does), fused AdamW and gradient
clipping, on random tokens at the shapes of bench_ours.py. Prints one BENCH line per model
(models.report): tokens/s, and MFU from the FLOP count both drivers share.

Usage: torch_baseline.py [--model gpt2|llama|all] [--batch 16] [--T 1024] [--steps 8]
                         [--warmup 3] [--no-compile]
"""
import argparse
import math
import os
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # no PyTorch here: nothing to compare with
    print("torch_baseline: skipped: PyTorch is not installed")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402


class GPT2Block(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.H = H
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.fc, self.fc_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, m):
        super().__init__()
        C, Vp = m["n_embd"], (m["vocab_size"] + 127) // 128 * 128  # padded like chainrule/llm.c
        self.wte, self.wpe = nn.Embedding(Vp, C), nn.Embedding(m["block_size"], C)
        self.blocks = nn.ModuleList(GPT2Block(C, m["n_head"]) for _ in range(m["n_layer"]))
        self.ln_f = nn.LayerNorm(C)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))


def rope_tables(T, hs, theta, device):
    inv = 1.0 / theta ** (torch.arange(0, hs, 2, device=device).float() / hs)
    f = torch.outer(torch.arange(T, device=device).float(), inv)
    emb = torch.cat([f, f], dim=-1)
    return emb.cos(), emb.sin()


def rotate(x, cos, sin):  # rotate-half convention (Hugging Face's, and chainrule's)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class RMSNorm(nn.Module):
    def __init__(self, C, eps=1e-5):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(C)), eps

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class LlamaBlock(nn.Module):
    def __init__(self, C, H, Hkv, Fh):
        super().__init__()
        self.H, self.Hkv, self.hs = H, Hkv, C // H
        self.n1, self.n2 = RMSNorm(C), RMSNorm(C)
        self.qkv = nn.Linear(C, (H + 2 * Hkv) * self.hs, bias=False)
        self.o = nn.Linear(C, C, bias=False)
        self.gate_up = nn.Linear(C, 2 * Fh, bias=False)
        self.down = nn.Linear(Fh, C, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q, k, v = self.qkv(self.n1(x)).split([self.H * self.hs, self.Hkv * self.hs, self.Hkv * self.hs], dim=2)
        q = rotate(q.view(B, T, self.H, self.hs).transpose(1, 2), cos, sin)
        k = rotate(k.view(B, T, self.Hkv, self.hs).transpose(1, 2), cos, sin)
        v = v.view(B, T, self.Hkv, self.hs).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o(y.transpose(1, 2).reshape(B, T, C))
        g, u = self.gate_up(self.n2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(g) * u)


class Llama(nn.Module):
    def __init__(self, m):
        super().__init__()
        C = m["n_embd"]
        self.emb = nn.Embedding(m["vocab_size"], C)
        self.blocks = nn.ModuleList(LlamaBlock(C, m["n_head"], m["n_kv_head"], m["ffn_hidden"])
                                    for _ in range(m["n_layer"]))
        self.norm = RMSNorm(C)
        self.head = nn.Linear(C, m["vocab_size"], bias=False)
        self.hs = C // m["n_head"]

    def forward(self, idx, targets):
        cos, sin = rope_tables(idx.shape[1], self.hs, 10000.0, idx.device)
        x = self.emb(idx)
        for b in self.blocks:
            x = b(x, cos, sin)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))


def init_weights(module):
    """GPT-2's initialisation (N(0, 0.02) weights, zero biases): sane logits at step 1."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def bench(name, args, device_name):
    m = models.MODELS[name]
    torch.manual_seed(0)
    model = (GPT2(m) if m["family"] == "gpt2" else Llama(m))
    model.apply(init_weights)
    model = model.cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    step_fn = torch.compile(model) if not args.no_compile else model
    B, T = args.batch, args.T
    x = torch.randint(0, m["vocab_size"], (B, T + 1), device="cuda")
    inp, tgt = x[:, :-1].contiguous(), x[:, 1:].contiguous()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_fn(inp, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    t0 = time.time()
    for _ in range(args.warmup):  # compiles forward and backward
        loss = step()
    torch.cuda.synchronize()
    compile_s = time.time() - t0
    t0 = time.time()
    for _ in range(args.steps):
        loss = step()
    torch.cuda.synchronize()
    secs = (time.time() - t0) / args.steps
    assert math.isfinite(loss.item()), "loss is not finite"
    models.report("torch.compile" if not args.no_compile else "torch.eager", name, B * T / secs,
                  secs * 1e3, T, device_name, f"warmup_s={compile_s:.1f} torch={torch.__version__}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="all", choices=["gpt2", "llama", "all"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--T", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("torch_baseline: skipped: torch sees no GPU")
        return 77
    torch.backends.cuda.matmul.allow_tf32 = True  # the fp32 bits (logits' loss) as a tuned user would
    device_name = torch.cuda.get_device_name(0)
    status = 0
    for name in (["gpt2", "llama"] if args.model == "all" else [args.model]):
        try:
            bench(name, args, device_name)
        except Exception as e:  # report and go on with the other model
            print(f"BENCH impl=torch.compile model={name} error={type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
            status = 1
        torch.cuda.empty_cache()
    return status


if __name__ == "__main__":
    sys.exit(main())
