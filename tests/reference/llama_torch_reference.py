#!/usr/bin/python3
"""Float64 PyTorch oracle for chainrule's Llama forward, backward and AdamW.

Usage: llama_torch_reference.py OUTDIR

OUTDIR holds what the C++ tool wrote: config.json (a Hugging Face LlamaConfig),
model.safetensors (initial weights, LlamaForCausalLM names), grads.safetensors
(C++ gradients for the grad-check batch, same names) and reference.json
(grad-check batch + loss, the logged training steps, and "decay": the tensor
names that get weight decay). Reading them, the checks below and the report are
shared with the GPT-2 oracle: torch_reference.py.

The model is Hugging Face's Llama written out independently of transformers:
RMSNorm (x * rsqrt(mean(x^2) + eps) * w), rotary embedding in the rotate-half
convention (inv_freq[i] = theta^(-2i/hs), cos/sin of cat(angle, angle), positions
0..T-1), grouped-query causal attention (query head h reads kv head
h // (H / Hkv)), optional q/k/v/o biases, a SwiGLU MLP (down(silu(gate) * up)),
a final RMSNorm and an lm_head that is the embedding when tied.

Checks:
  1. grad check: loss on the grad-check batch matches the C++ loss to a relative
     error <= 1e-5, and every parameter gradient matches to a relative L2 error
     <= 1e-4 (names must match exactly in both directions);
  2. training: the logged AdamW steps (gradient accumulation, global-norm
     clipping, decoupled weight decay on the tensors reference.json's "decay"
     lists) replayed with torch.optim.AdamW; per-step loss and pre-clip grad
     norm must match to a relative error <= 1e-4.

Why the tolerances are tight enough: float32 C++ arithmetic against a float64
oracle gives relative errors around 1e-7..1e-6 for a correct implementation.
A transposed square weight, a wrong rotary convention (interleaved pairs instead
of halves), a wrong query-to-kv-head mapping or a missing/zeroed gradient gives
O(1e-2..1) relative L2 error on the affected tensors, and in training any wrong
update (missing decay, clipping, bias correction) shifts the loss of the
following step by far more than 1e-4 relative.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference as tr  # noqa: E402  (shared checks; found next to this script from any cwd)


def normalize_config(cfg):
    """Fill Hugging Face LlamaConfig defaults; return a list of unsupported settings."""
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    cfg.setdefault("rms_norm_eps", 1e-6)
    cfg.setdefault("rope_theta", 10000.0)
    cfg.setdefault("tie_word_embeddings", False)
    cfg.setdefault("attention_bias", False)
    cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    bad = []
    if cfg.get("model_type", "llama") != "llama":
        bad.append(f"model_type {cfg.get('model_type')!r} != 'llama'")
    if cfg.get("hidden_act", "silu") != "silu":
        bad.append(f"hidden_act {cfg.get('hidden_act')!r} != 'silu'")
    if cfg.get("rope_scaling") is not None:
        bad.append(f"rope_scaling {cfg['rope_scaling']!r} is not supported (must be null)")
    if cfg.get("mlp_bias", False):
        bad.append("mlp_bias is not supported")
    H, Hkv, hs = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    if H % Hkv != 0:
        bad.append(f"num_attention_heads {H} not a multiple of num_key_value_heads {Hkv}")
    if hs % 2 != 0:
        bad.append(f"head dim {hs} is odd (rotary needs an even head dim)")
    return bad


def expected_shapes(cfg):
    V, C, L, F_ = cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]
    H, Hkv, hs = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    shapes = {"model.embed_tokens.weight": [V, C], "model.norm.weight": [C]}
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = [V, C]
    for i in range(L):
        h = f"model.layers.{i}."
        shapes.update({
            h + "input_layernorm.weight": [C],
            h + "self_attn.q_proj.weight": [H * hs, C],
            h + "self_attn.k_proj.weight": [Hkv * hs, C],
            h + "self_attn.v_proj.weight": [Hkv * hs, C],
            h + "self_attn.o_proj.weight": [C, H * hs],
            h + "post_attention_layernorm.weight": [C],
            h + "mlp.gate_proj.weight": [F_, C],
            h + "mlp.up_proj.weight": [F_, C],
            h + "mlp.down_proj.weight": [C, F_],
        })
        if cfg["attention_bias"]:
            shapes.update({
                h + "self_attn.q_proj.bias": [H * hs], h + "self_attn.k_proj.bias": [Hkv * hs],
                h + "self_attn.v_proj.bias": [Hkv * hs], h + "self_attn.o_proj.bias": [C],
            })
    return shapes


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * w


def rotary_cos_sin(T, hs, theta):
    """cos/sin [T, hs] of Hugging Face's rotary embedding (halves duplicated: cat(angle, angle))."""
    inv_freq = 1.0 / theta ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]
    emb = torch.cat((angle, angle), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def linear(x, p, name, bias):
    y = x @ p[name + ".weight"].t()
    return y + p[name + ".bias"] if bias else y


def forward_loss(p, cfg, inputs, targets, allowed=None):
    """Mean token cross-entropy of Llama with parameters p (dict of tensors)."""
    idx = torch.tensor(inputs, dtype=torch.long)
    tgt = torch.tensor(targets, dtype=torch.long)
    B, T = idx.shape
    H, Hkv, hs = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps, bias = cfg["rms_norm_eps"], cfg["attention_bias"]
    cos, sin = rotary_cos_sin(T, hs, float(cfg["rope_theta"]))
    # allowed [B,T,T] (query, key): the masked variant's document and prefix-LM masks
    causal = torch.ones(T, T, dtype=torch.bool).tril() if allowed is None else allowed[:, None]
    x = p["model.embed_tokens.weight"][idx]
    for i in range(cfg["num_hidden_layers"]):
        h = f"model.layers.{i}."
        a = rms_norm(x, p[h + "input_layernorm.weight"], eps)
        q = linear(a, p, h + "self_attn.q_proj", bias).view(B, T, H, hs).transpose(1, 2)
        k = linear(a, p, h + "self_attn.k_proj", bias).view(B, T, Hkv, hs).transpose(1, 2)
        v = linear(a, p, h + "self_attn.v_proj", bias).view(B, T, Hkv, hs).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # grouped-query attention: query head j reads kv head j // (H / Hkv)
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, H * hs)
        x = x + linear(y, p, h + "self_attn.o_proj", bias)
        m = rms_norm(x, p[h + "post_attention_layernorm.weight"], eps)
        m = F.silu(m @ p[h + "mlp.gate_proj.weight"].t()) * (m @ p[h + "mlp.up_proj.weight"].t())
        x = x + m @ p[h + "mlp.down_proj.weight"].t()
    x = rms_norm(x, p["model.norm.weight"], eps)
    head = p["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else p["lm_head.weight"]
    logits = x @ head.t()
    return F.cross_entropy(logits.reshape(B * T, -1), tgt.reshape(B * T), ignore_index=-1)


def main(argv):
    loaded = tr.load(argv, "llama_torch_reference.py")
    if loaded is None:
        return 2
    cfg, ref, weights, cpp_grads = loaded

    failures = normalize_config(cfg)
    print(f"config: V={cfg['vocab_size']} C={cfg['hidden_size']} F={cfg['intermediate_size']}"
          f" L={cfg['num_hidden_layers']} H={cfg['num_attention_heads']} Hkv={cfg['num_key_value_heads']}"
          f" hs={cfg['head_dim']} eps={cfg['rms_norm_eps']:g} theta={cfg['rope_theta']:g}"
          f" tied={cfg['tie_word_embeddings']} attention_bias={cfg['attention_bias']}")
    if failures:
        return tr.fail(failures, count_rest=False)
    tr.check_shapes(weights, expected_shapes(cfg), failures)
    if "decay" not in ref:
        failures.append("reference.json lacks \"decay\" (the tensor names that get weight decay)")
    else:
        decay_names = set(ref["decay"])
        for name in sorted(decay_names - set(weights)):
            failures.append(f"reference.json decay names unknown tensor {name}")
    if failures:
        return tr.fail(failures)
    print(f"weight decay on {len(decay_names)} of {len(weights)} tensors")

    return tr.run_checks(forward_loss, cfg, weights, cpp_grads, ref, decay_names.__contains__, failures,
                         clip=tr.torch_clip_grad_norm)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
