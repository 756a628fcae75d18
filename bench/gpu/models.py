"""The two benchmark models, their FLOP count and the GPU's peak: one definition shared by our
bench driver (bench_ours.py) and the PyTorch baseline (torch_baseline.py), so both count the
same FLOPs and the tokens/s ratio equals the MFU ratio.

FLOPs per trained token (forward + backward), the PaLM / llm.c convention:
    6 * N_matmul + 12 * L * T * C_attn
  N_matmul: weights used in matrix multiplies (every linear layer and the LM head, counted with
            the real vocabulary V; the embedding lookup, positions, norms and biases do no GEMM);
            6 = 2 (multiply-add) x 3 (forward, backward to inputs, backward to weights).
  12 L T C_attn: attention's QK^T and PV (2 GEMMs x 2 FLOPs x 3 passes over T keys per query
            and C_attn = n_head * head_size channels), counted over the full T x T square as
            llm.c and nanoGPT do (a causal kernel skips half: MFU by this count is comparable
            with theirs, not "hardware" FLOPs).
MFU = tokens/s * FLOPs per token / the GPU's dense bf16 peak (no sparsity).
"""

# GPT-2 124M: the gpt2 family (LayerNorm, GELU MLP 4C, learned positions, tied head, biases).
# Llama-style of similar size: RoPE, RMSNorm, SwiGLU (ffn 2048 = 4.7M weights per layer, GPT-2's
# MLP size), 12 query heads on 4 kv heads, untied head over a 32000 vocabulary, no biases:
# about 124M parameters in all.
MODELS = {
    "gpt2": dict(family="gpt2", n_layer=12, n_head=12, n_kv_head=12, n_embd=768, ffn_hidden=3072,
                 vocab_size=50257, block_size=1024, tie_embeddings=True, bias=True),
    "llama": dict(family="llama", n_layer=12, n_head=12, n_kv_head=4, n_embd=768, ffn_hidden=2048,
                  vocab_size=32000, block_size=1024, tie_embeddings=False, bias=False),
}


def matmul_params(m):
    """Weights that take part in GEMMs (see the module comment)."""
    C, L, H, Hkv, F, V = m["n_embd"], m["n_layer"], m["n_head"], m["n_kv_head"], m["ffn_hidden"], m["vocab_size"]
    hs = C // H
    attn = C * (H + 2 * Hkv) * hs + H * hs * C  # qkv projection + output projection
    mlp = (3 if m["family"] == "llama" else 2) * C * F  # SwiGLU: gate, up, down; GELU: fc, proj
    return L * (attn + mlp) + V * C  # + the LM head


def flops_per_token(m, T):
    return 6 * matmul_params(m) + 12 * m["n_layer"] * T * m["n_embd"]


def total_params(m):
    """All parameters (for the report): GEMM weights + embeddings + norms + biases."""
    C, L, H, Hkv, F, V = m["n_embd"], m["n_layer"], m["n_head"], m["n_kv_head"], m["ffn_hidden"], m["vocab_size"]
    n = matmul_params(m)
    if m["family"] == "gpt2":
        n += m["block_size"] * C + L * (4 * C + (C * (H + 2 * Hkv) // H + C) + (F + C)) + 2 * C
    else:
        n += V * C + L * 2 * C + C  # untied input embedding, RMSNorm weights
    return n


# Dense bf16 tensor-core peaks in FLOP/s (vendor datasheets, without sparsity), matched against
# the device name (nvidia-smi or torch.cuda.get_device_name) in this order.
PEAKS = [
    ("H200", 989e12), ("H100 NVL", 835e12), ("H100 PCIe", 756e12), ("H100", 989e12),
    ("H800", 989e12), ("GH200", 989e12), ("B200", 2250e12), ("A100", 312e12), ("A800", 312e12),
    ("L40S", 362e12), ("L4", 121e12), ("A10G", 70e12), ("RTX 4090", 165e12),
]


def peak_flops(device_name):
    """(peak FLOP/s, the table entry matched) for a device name; (None, None) if unknown."""
    for key, peak in PEAKS:
        if key.lower() in (device_name or "").lower():
            return peak, key
    return None, None


def gpu_name():
    """The first GPU's name from nvidia-smi ('' when there is none)."""
    import subprocess
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def report(impl, model, tokens_per_s, ms_per_step, T, device_name, extra=""):
    """Prints the one parseable result line both drivers share."""
    m = MODELS[model]
    fpt = flops_per_token(m, T)
    peak, _ = peak_flops(device_name)
    mfu = f"{100 * tokens_per_s * fpt / peak:.1f}" if peak and tokens_per_s else "n/a"
    print(f"BENCH impl={impl} model={model} params={total_params(m) / 1e6:.1f}M T={T} "
          f"tokens_per_s={tokens_per_s:.0f} ms_per_step={ms_per_step:.1f} "
          f"gflop_per_token={fpt / 1e9:.3f} mfu_pct={mfu} device={device_name.replace(' ', '_') or 'none'}"
          + (f" {extra}" if extra else ""), flush=True)
