"""What the float64 PyTorch oracles (gpt2_torch_reference.py, llama_torch_reference.py) share.

Each oracle supplies only its model (a float64 forward_loss, the expected
weight names and shapes, which tensors get weight decay); this module reads the
C++ tool's OUTDIR (config.json, model.safetensors, grads.safetensors,
reference.json) and runs the two checks against it:
  1. grad check: loss on the grad-check batch matches the C++ loss to a relative
     error <= LOSS_TOL, and every parameter gradient matches to a relative L2
     error <= GRAD_TOL (names must match exactly in both directions);
  2. training: the logged AdamW steps (gradient accumulation, global-norm
     clipping, decoupled weight decay) replayed with torch.optim.AdamW; per-step
     loss and pre-clip grad norm must match to a relative error <= TRAIN_TOL.
The exit status is 0 when every check passes, 1 on any failure and 2 on a usage
error. Why these tolerances are tight enough is in each oracle's docstring.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch

LOSS_TOL, GRAD_TOL, TRAIN_TOL = 1e-5, 1e-4, 1e-4
DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16}


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


def load(argv, script):
    """Read OUTDIR = argv[1]: return (cfg, ref, weights, cpp_grads), or None after printing usage.

    cfg is config.json and ref is reference.json as parsed; weights and cpp_grads
    are model.safetensors and grads.safetensors as {name: float64 numpy array}.
    """
    if len(argv) != 2 or not os.path.isdir(argv[1]):
        print(f"usage: {script} OUTDIR (directory with config.json, model.safetensors,"
              " grads.safetensors, reference.json)", file=sys.stderr)
        return None
    torch.set_num_threads(2)
    d = argv[1]
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(d, "reference.json")) as f:
        ref = json.load(f)
    weights = read_safetensors(os.path.join(d, "model.safetensors"))
    cpp_grads = read_safetensors(os.path.join(d, "grads.safetensors"))
    return cfg, ref, weights, cpp_grads


def check_shapes(weights, shapes, failures):
    """Append to failures every tensor missing from, unexpected in or misshapen in weights."""
    for name in sorted(set(weights) | set(shapes)):
        if name not in weights:
            failures.append(f"model.safetensors lacks {name}")
        elif name not in shapes:
            failures.append(f"model.safetensors has unexpected tensor {name}")
        elif list(weights[name].shape) != shapes[name]:
            failures.append(f"{name} shape {list(weights[name].shape)} != expected {shapes[name]}")


def fail(failures, count_rest=True):
    """Print the first 5 failures (and, with count_rest, how many more there are); return exit status 1."""
    more = f" (+{len(failures) - 5} more)" if count_rest and len(failures) > 5 else ""
    print("FAIL: " + "; ".join(failures[:5]) + more)
    return 1


def make_params(weights):
    return {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in weights.items()}


MASK_FLAGS = None  # reference.json's "masked" section (eot, document_mask, prefix_lm), if any


def allowed_keys(masked, flags):
    """The masked variant's attention mask [B,T,T] (query, key), built independently of the
    C++ key ranges from their definitions: a query sees the keys before it; with prefix-LM a
    prompt token (loss mask 0) also sees every later token of its prompt (a run of prompt
    tokens that an EOT starts); with a document mask nothing across an EOT (each EOT starts a
    document)."""
    windows = torch.tensor(masked["windows"], dtype=torch.long)[:, :-1]
    prompt = torch.tensor(masked["loss_mask"], dtype=torch.long)[:, :-1] == 0
    B, T = windows.shape
    eot = windows == flags["eot"]
    doc = torch.cumsum(eot.long(), dim=1)                  # document id per position
    new_run = eot | ~prompt
    run = torch.cumsum(new_run.long(), dim=1)              # prompt-run id per position
    t = torch.arange(T)
    allowed = (t[None, :, None] >= t[None, None, :]).expand(B, T, T).clone()
    if flags["prefix_lm"]:
        same_run = (run[:, :, None] == run[:, None, :]) & prompt[:, :, None] & prompt[:, None, :]
        allowed |= same_run
    if flags["document_mask"]:
        allowed &= doc[:, :, None] == doc[:, None, :]
    return allowed


def extra_args(batch):
    """forward_loss's mask argument for a batch of the masked variant, else nothing."""
    if "masked" not in batch:
        return {}
    return {"allowed": allowed_keys(batch["masked"], MASK_FLAGS)}


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


def grad_check(forward_loss, cfg, weights, cpp_grads, gc, failures):
    """Check 1: loss and every gradient of reference.json's grad-check batch gc against the C++ ones."""
    p = make_params(weights)
    loss = forward_loss(p, cfg, gc["inputs"], gc["targets"], **extra_args(gc))
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


def clip_grad_norm(params, max_norm):
    """Global-norm clipping as the C++ trainer does it: scale by max_norm / norm when over.

    Returns the pre-clip global norm.
    """
    with torch.no_grad():
        norm = math.sqrt(sum(float((v.grad ** 2).sum()) for v in params))
        if norm > max_norm:
            for v in params:
                v.grad.mul_(max_norm / norm)
    return norm


def torch_clip_grad_norm(params, max_norm):
    """torch.nn.utils.clip_grad_norm_: returns the pre-clip global norm; scales by
    max_norm / (norm + 1e-6) when over."""
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))


def train_check(forward_loss, cfg, weights, tr, decays, failures, clip=clip_grad_norm):
    """Check 2: replay reference.json's train section tr with torch.optim.AdamW.

    decays(name) says whether a tensor gets weight decay; clip(params, max_norm)
    clips the gradients and returns the pre-clip global norm.
    """
    p = make_params(weights)
    decay = [v for k, v in p.items() if decays(k)]
    no_decay = [v for k, v in p.items() if not decays(k)]
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
            loss = forward_loss(p, cfg, mb["inputs"], mb["targets"], **extra_args(mb))
            # masked: each micro-batch weighs its counted targets (mean over the step's counted)
            w = mb.get("weight", 1.0 / len(mbs))
            (loss * w).backward()
            losses.append(loss.item() * w)
        step_loss = sum(losses)
        norm = clip(list(p.values()), tr["grad_clip"])
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


def run_checks(forward_loss, cfg, weights, cpp_grads, ref, decays, failures, clip=clip_grad_norm):
    """Run both checks, print PASS or the failures (with those already in failures); return the exit status."""
    global MASK_FLAGS
    MASK_FLAGS = ref.get("masked")
    grad_check(forward_loss, cfg, weights, cpp_grads, ref["grad_check"], failures)
    if not ref["train"]["steps"]:
        failures.append("reference.json has no train steps")
    print()
    train_check(forward_loss, cfg, weights, ref["train"], decays, failures, clip)
    print()
    if failures:
        return fail(failures)
    print("PASS")
    return 0
