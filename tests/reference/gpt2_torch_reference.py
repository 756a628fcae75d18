#!/usr/bin/python3
"""Float64 PyTorch oracle for chainrule's GPT-2 forward, backward and AdamW.

Usage: gpt2_torch_reference.py OUTDIR

OUTDIR holds what the C++ tool wrote: config.json, model.safetensors (initial
weights), grads.safetensors (C++ gradients for the grad-check batch) and
reference.json (grad-check batch + loss, and 10 logged training steps). Reading them,
the checks below and the report are shared with the Llama oracle: torch_reference.py.

Checks:
  1. grad check: loss on the grad-check batch matches the C++ loss to a relative
     error <= 1e-5, and every parameter gradient matches to a relative L2 error
     <= 1e-4 (names must match exactly in both directions);
  2. training: 10 AdamW steps (gradient accumulation, global-norm clipping,
     decoupled weight decay on matmul weights and wte only) replayed with
     torch.optim.AdamW; per-step loss and pre-clip grad norm must match to a
     relative error <= 1e-4.

Why the tolerances are tight enough: float32 C++ arithmetic against a float64
oracle gives relative errors around 1e-7..1e-6 for a correct implementation.
A transposed square weight, swapped q/k/v columns, a wrong head split or a
missing/zeroed gradient gives O(1) relative L2 error on the affected tensor,
and in training any wrong update (missing decay, clipping, bias correction)
shifts the loss of the following step by far more than 1e-4 relative.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference as tr  # noqa: E402  (shared checks; found next to this script from any cwd)

DECAY_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def expected_shapes(cfg):
    V, P, C, L = cfg["vocab_size"], cfg["n_positions"], cfg["n_embd"], cfg["n_layer"]
    shapes = {"wte.weight": [V, C], "wpe.weight": [P, C], "ln_f.weight": [C], "ln_f.bias": [C]}
    for i in range(L):
        h = f"h.{i}."
        shapes.update({
            h + "ln_1.weight": [C], h + "ln_1.bias": [C],
            h + "attn.c_attn.weight": [C, 3 * C], h + "attn.c_attn.bias": [3 * C],
            h + "attn.c_proj.weight": [C, C], h + "attn.c_proj.bias": [C],
            h + "ln_2.weight": [C], h + "ln_2.bias": [C],
            h + "mlp.c_fc.weight": [C, 4 * C], h + "mlp.c_fc.bias": [4 * C],
            h + "mlp.c_proj.weight": [4 * C, C], h + "mlp.c_proj.bias": [C],
        })
    return shapes


def forward_loss(p, cfg, inputs, targets, allowed=None):
    """Mean token cross-entropy of GPT-2 with parameters p (dict of tensors)."""
    idx = torch.tensor(inputs, dtype=torch.long)
    tgt = torch.tensor(targets, dtype=torch.long)
    B, T = idx.shape
    C, H, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    hs = C // H
    # allowed [B,T,T] (query, key): the masked variant's document and prefix-LM masks
    causal = torch.ones(T, T, dtype=torch.bool).tril() if allowed is None else allowed[:, None]
    x = p["wte.weight"][idx] + p["wpe.weight"][:T]
    for i in range(cfg["n_layer"]):
        h = f"h.{i}."
        a = F.layer_norm(x, (C,), p[h + "ln_1.weight"], p[h + "ln_1.bias"], eps)
        qkv = a @ p[h + "attn.c_attn.weight"] + p[h + "attn.c_attn.bias"]
        q, k, v = (t.view(B, T, H, hs).transpose(1, 2) for t in qkv.split(C, dim=2))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ p[h + "attn.c_proj.weight"] + p[h + "attn.c_proj.bias"]
        m = F.layer_norm(x, (C,), p[h + "ln_2.weight"], p[h + "ln_2.bias"], eps)
        m = F.gelu(m @ p[h + "mlp.c_fc.weight"] + p[h + "mlp.c_fc.bias"], approximate="tanh")
        x = x + m @ p[h + "mlp.c_proj.weight"] + p[h + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"], eps)
    logits = x @ p["wte.weight"].t()
    return F.cross_entropy(logits.reshape(B * T, -1), tgt.reshape(B * T), ignore_index=-1)


def decays(name):
    """Decoupled weight decay on matmul weights and wte only."""
    return name == "wte.weight" or name.endswith(DECAY_SUFFIXES)


def main(argv):
    loaded = tr.load(argv, "gpt2_torch_reference.py")
    if loaded is None:
        return 2
    cfg, ref, weights, cpp_grads = loaded
    cfg.setdefault("layer_norm_epsilon", 1e-5)
    print(f"config: V={cfg['vocab_size']} P={cfg['n_positions']} C={cfg['n_embd']}"
          f" L={cfg['n_layer']} H={cfg['n_head']} eps={cfg['layer_norm_epsilon']:g}")

    failures = []
    tr.check_shapes(weights, expected_shapes(cfg), failures)
    if failures:
        return tr.fail(failures, count_rest=False)
    return tr.run_checks(forward_loss, cfg, weights, cpp_grads, ref, decays, failures)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
