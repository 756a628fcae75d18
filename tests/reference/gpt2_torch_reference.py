#!/usr/bin/python3
"""Float64 PyTorch oracle for chainrule's GPT-2 forward, backward and AdamW.

Usage: gpt2_torch_reference.py OUTDIR

OUTDIR holds what the C++ tool wrote: config.json, model.safetensors (initial
weights), grads.safetensors (C++ gradients for the grad-check batch) and
reference.json (grad-check batch + loss, and 10 logged training steps).

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
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

LOSS_TOL, GRAD_TOL, TRAIN_TOL = 1e-5, 1e-4, 1e-4
DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16}
DECAY_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def read_safetensors(path):
    """Return {name: float64 numpy array} from a .safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = memoryview(blob)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            raise ValueError(f"{path}: {name}: unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        arr = np.frombuffer(data[begin:end], dtype=np.dtype(DTYPES[info["dtype"]]).newbyteorder("<"))
        out[name] = arr.reshape(info["shape"]).astype(np.float64)
    return out


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


def forward_loss(p, cfg, inputs, targets):
    """Mean token cross-entropy of GPT-2 with parameters p (dict of tensors)."""
    idx = torch.tensor(inputs, dtype=torch.long)
    tgt = torch.tensor(targets, dtype=torch.long)
    B, T = idx.shape
    C, H, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    hs = C // H
    causal = torch.ones(T, T, dtype=torch.bool).tril()
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
    return F.cross_entropy(logits.reshape(B * T, -1), tgt.reshape(B * T))


def make_params(weights):
    return {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in weights.items()}


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


def grad_check(cfg, weights, cpp_grads, gc, failures):
    p = make_params(weights)
    loss = forward_loss(p, cfg, gc["inputs"], gc["targets"])
    loss.backward()
    loss_err = rel(gc["loss"], loss.item())
    print(f"grad check: cpp loss {gc['loss']:.8f}  torch loss {loss.item():.8f}  rel err {loss_err:.2e}")
    if not loss_err <= LOSS_TOL:
        failures.append(f"grad-check loss rel err {loss_err:.2e} > {LOSS_TOL:g}")
    for name in sorted(set(cpp_grads) - set(p)):
        failures.append(f"unexpected gradient {name}")
    errs = []
    for name in p:
        if name not in cpp_grads:
            failures.append(f"missing gradient {name}")
            continue
        g_ref = p[name].grad.numpy()
        g_cpp = cpp_grads[name]
        if g_cpp.shape != g_ref.shape:
            failures.append(f"gradient {name} shape {list(g_cpp.shape)} != {list(g_ref.shape)}")
            continue
        err = np.linalg.norm(g_ref - g_cpp) / max(np.linalg.norm(g_ref), 1e-30)
        errs.append((err, name))
    errs.sort(reverse=True)
    print("worst gradient rel-L2 errors:")
    for err, name in errs[:5]:
        print(f"  {err:.2e}  {name}")
    bad = [(e, n) for e, n in errs if not e <= GRAD_TOL]
    if bad:
        failures.append(f"{len(bad)} gradient(s) over {GRAD_TOL:g}, worst {bad[0][1]} ({bad[0][0]:.2e})")
    return errs[0][0] if errs else float("nan")


def train_check(cfg, weights, tr, failures):
    p = make_params(weights)
    decay = [v for k, v in p.items() if k == "wte.weight" or k.endswith(DECAY_SUFFIXES)]
    no_decay = [v for k, v in p.items() if not (k == "wte.weight" or k.endswith(DECAY_SUFFIXES))]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tr["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=0.0, betas=(tr["beta1"], tr["beta2"]), eps=tr["eps"])
    print(f"{'step':>4} {'lr':>10} {'cpp loss':>12} {'torch loss':>12} {'rel err':>9}"
          f" {'cpp gnorm':>11} {'torch gnorm':>11} {'rel err':>9}")
    worst_loss = worst_norm = 0.0
    for s, step in enumerate(tr["steps"]):
        opt.zero_grad(set_to_none=False)
        mbs = step["micro_batches"]
        losses = []
        for mb in mbs:
            loss = forward_loss(p, cfg, mb["inputs"], mb["targets"])
            (loss / len(mbs)).backward()
            losses.append(loss.item())
        step_loss = sum(losses) / len(losses)
        with torch.no_grad():
            norm = math.sqrt(sum(float((v.grad ** 2).sum()) for v in p.values()))
            if norm > tr["grad_clip"]:
                for v in p.values():
                    v.grad.mul_(tr["grad_clip"] / norm)
        for g in opt.param_groups:
            g["lr"] = step["lr"]
        opt.step()
        le, ne = rel(step["loss"], step_loss), rel(step["grad_norm"], norm)
        worst_loss, worst_norm = max(worst_loss, le), max(worst_norm, ne)
        print(f"{s:>4} {step['lr']:>10.3e} {step['loss']:>12.7f} {step_loss:>12.7f} {le:>9.2e}"
              f" {step['grad_norm']:>11.5e} {norm:>11.5e} {ne:>9.2e}")
        if not le <= TRAIN_TOL:
            failures.append(f"step {s} loss rel err {le:.2e} > {TRAIN_TOL:g}")
        if not ne <= TRAIN_TOL:
            failures.append(f"step {s} grad_norm rel err {ne:.2e} > {TRAIN_TOL:g}")
    return worst_loss, worst_norm


def main(argv):
    if len(argv) != 2 or not os.path.isdir(argv[1]):
        print("usage: gpt2_torch_reference.py OUTDIR (directory with config.json, model.safetensors,"
              " grads.safetensors, reference.json)", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    d = argv[1]
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    cfg.setdefault("layer_norm_epsilon", 1e-5)
    with open(os.path.join(d, "reference.json")) as f:
        ref = json.load(f)
    weights = read_safetensors(os.path.join(d, "model.safetensors"))
    cpp_grads = read_safetensors(os.path.join(d, "grads.safetensors"))
    print(f"config: V={cfg['vocab_size']} P={cfg['n_positions']} C={cfg['n_embd']}"
          f" L={cfg['n_layer']} H={cfg['n_head']} eps={cfg['layer_norm_epsilon']:g}")

    failures = []
    shapes = expected_shapes(cfg)
    for name in sorted(set(weights) | set(shapes)):
        if name not in weights:
            failures.append(f"model.safetensors lacks {name}")
        elif name not in shapes:
            failures.append(f"model.safetensors has unexpected tensor {name}")
        elif list(weights[name].shape) != shapes[name]:
            failures.append(f"{name} shape {list(weights[name].shape)} != expected {shapes[name]}")
    if failures:
        print("FAIL: " + "; ".join(failures[:5]))
        return 1

    grad_check(cfg, weights, cpp_grads, ref["grad_check"], failures)
    if not ref["train"]["steps"]:
        failures.append("reference.json has no train steps")
    print()
    train_check(cfg, weights, ref["train"], failures)
    print()
    if failures:
        more = f" (+{len(failures) - 5} more)" if len(failures) > 5 else ""
        print("FAIL: " + "; ".join(failures[:5]) + more)
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
