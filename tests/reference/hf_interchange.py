#!/usr/bin/env python3
"""Hugging Face transformers as an oracle for chainrule's model interchange.

Run with the Python of the venv that tests/reference/venv.sh makes (transformers 4.40.2 over
Debian's torch 1.13):

  hf_interchange.py export-check --chainrule BIN --run RUN_DIR --data DATA_DIR [--model-type T]
      RUN_DIR is what `chainrule train` wrote (model.safetensors + config.json). transformers
      loads it with AutoModelForCausalLM (every tensor must be used, none missing), computes the
      mean cross-entropy over exactly the windows `chainrule eval RUN_DIR --data DATA_DIR` scores,
      and that must equal chainrule's val_loss within 1e-5 relative (and the token counts must
      be equal).

  hf_interchange.py fidelity --chainrule BIN --work DIR [--only NAME ...] [--list]
      The config-fidelity cases (CASES below): transformers writes a small random model whose
      config.json sets one field away from its default, and `chainrule eval` must either
      reproduce transformers' loss within 1e-5 relative ("agree") or exit non-zero with exactly
      one stderr line `chainrule: error: ...` naming the field and its value ("reject"). The
      table says which is expected; a silent mismatch always fails. Prints one line per case and
      exits 1 if any fails.

Both compute transformers' side in float64 (loaded as float32 weights, then .double()), so the
oracle's own rounding is ~1e-15 and the 1e-5 budget is all chainrule's float32 arithmetic
(~1e-7..1e-6 when right). Models are only ever loaded from local directories (HF offline mode).
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel,  # noqa: E402
                          LlamaConfig, LlamaForCausalLM)
from transformers.pytorch_utils import Conv1D  # noqa: E402

transformers.logging.set_verbosity_error()

REL_TOL = 1e-5
SHARD_MAGIC, HEADER_INTS = 20240520, 256
CHAINRULE_TIMEOUT_S = 120


# ---- llm.c token shards and chainrule's evaluation windows -----------------------------------

def read_shard(path):
    """Tokens of an llm.c shard (256 x int32 header: magic, version 1 = uint16 / 2 = uint32, count)."""
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(HEADER_INTS * 4), dtype="<i4")
        if len(header) != HEADER_INTS or header[0] != SHARD_MAGIC or header[1] not in (1, 2):
            raise SystemExit("%s: not an llm.c token shard (header %s)" % (path, header[:3]))
        dtype = "<u2" if header[1] == 1 else "<u4"
        toks = np.frombuffer(f.read(), dtype=dtype)
    n = int(header[2])
    if len(toks) < n:
        raise SystemExit("%s: truncated (%d of %d tokens)" % (path, len(toks), n))
    return toks[:n].astype(np.int64)


def write_shard(path, tokens):
    """A version-1 (uint16) llm.c shard."""
    tokens = np.asarray(tokens)
    assert tokens.min() >= 0 and tokens.max() < 65536
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (SHARD_MAGIC, 1, len(tokens))
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype("<u2").tobytes())


def eval_windows(data_dir, T):
    """The windows `chainrule eval` scores (launcher/evaluate.cpp, evaluate_split): over every
    *val*.bin of DATA_DIR in name order, windows start at 0, T, 2T, ... while pos + 1 < n, of
    len = min(T, n - 1 - pos) tokens (full ones, then ragged tails); inputs tokens[pos:pos+len],
    targets tokens[pos+1:pos+len+1]. The loss is the mean over all predicted tokens, so the
    order does not matter."""
    paths = sorted(p for p in glob.glob(os.path.join(data_dir, "*.bin"))
                   if "val" in os.path.basename(p))
    if not paths:
        raise SystemExit("%s: no *val*.bin shards" % data_dir)
    full, tails = [], []
    for p in paths:
        toks = read_shard(p)
        pos = 0
        while pos + 1 < len(toks):
            n = min(T, len(toks) - 1 - pos)
            (full if n == T else tails).append((toks[pos:pos + n], toks[pos + 1:pos + n + 1]))
            pos += T
    return full, tails


# ---- transformers' side ------------------------------------------------------------------------

def load_hf(model_dir):
    """AutoModelForCausalLM from a local dir: float32 weights, then float64 for the arithmetic.
    Every stored tensor must be used and none may be missing (a silently re-initialised weight
    would make the comparison meaningless)."""
    model, info = AutoModelForCausalLM.from_pretrained(
        model_dir, torch_dtype=torch.float32, attn_implementation="eager",
        output_loading_info=True, local_files_only=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise SystemExit("%s: transformers did not load every tensor cleanly: %s"
                         % (model_dir, problems))
    return model.double().eval()


@torch.no_grad()
def hf_nats(model, full, tails, batch=16):
    """(summed nats, predicted tokens) of MODEL over the windows, in float64."""
    nats, count = 0.0, 0

    def run(inputs, targets):
        nonlocal nats, count
        x = torch.as_tensor(np.stack(inputs))
        y = torch.as_tensor(np.stack(targets))
        logits = model(input_ids=x, use_cache=False).logits.double()
        logp = torch.log_softmax(logits, dim=-1)
        nats -= logp.gather(-1, y.unsqueeze(-1)).sum().item()
        count += y.numel()

    for i in range(0, len(full), batch):
        chunk = full[i:i + batch]
        run([w[0] for w in chunk], [w[1] for w in chunk])
    for w in tails:
        run([w[0]], [w[1]])
    return nats, count


def context_length(config):
    # GPT-2's n_positions and Llama's max_position_embeddings (GPT2Config maps the latter name).
    return int(config.max_position_embeddings)


# ---- chainrule's side --------------------------------------------------------------------------

def chainrule_eval(binary, model_dir, data_dir):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    return subprocess.run([binary, "eval", model_dir, "--data", data_dir, "--json"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          timeout=CHAINRULE_TIMEOUT_S)


def parse_eval_json(proc):
    """(loss, tokens) from a successful `chainrule eval --json`; raises ValueError otherwise."""
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    if len(lines) != 1:
        raise ValueError("expected one JSON line on stdout, got %d: %r" % (len(lines), proc.stdout[-500:]))
    j = json.loads(lines[0])
    loss = j["val_loss"] if "val_loss" in j else j["loss"]
    return float(loss), int(j["tokens"])


def rel_err(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


# ---- export-check ------------------------------------------------------------------------------

def cmd_export_check(args):
    cfg_path = os.path.join(args.run, "config.json")
    if not os.path.exists(cfg_path) or not os.path.exists(os.path.join(args.run, "model.safetensors")):
        raise SystemExit("%s: no config.json + model.safetensors (a finished chainrule run?)" % args.run)
    t0 = time.time()
    model = load_hf(args.run)
    mtype = model.config.model_type
    if args.model_type and mtype != args.model_type:
        raise SystemExit("FAIL: %s has model_type %r, expected %r" % (cfg_path, mtype, args.model_type))
    T = context_length(model.config)
    full, tails = eval_windows(args.data, T)
    nats, count = hf_nats(model, full, tails)
    hf_loss = nats / count
    t_hf = time.time() - t0

    proc = chainrule_eval(args.chainrule, args.run, args.data)
    if proc.returncode != 0:
        raise SystemExit("FAIL: chainrule eval exited %d: %s" % (proc.returncode, proc.stderr.strip()))
    cr_loss, cr_tokens = parse_eval_json(proc)
    err = rel_err(cr_loss, hf_loss)
    print("%s (%s, %d layers, width %d, T %d): %d windows (%d full, %d ragged), %d tokens; "
          "transformers %.9f, chainrule %.9f (%d tokens), rel err %.2e (tolerance %.0e); hf %.1f s"
          % (args.run, type(model).__name__, model.config.num_hidden_layers, model.config.hidden_size,
             T, len(full) + len(tails), len(full), len(tails), count, hf_loss, cr_loss, cr_tokens,
             err, REL_TOL, t_hf))
    if cr_tokens != count:
        raise SystemExit("FAIL: chainrule scored %d tokens, transformers %d: the windows differ"
                         % (cr_tokens, count))
    if not err <= REL_TOL:
        raise SystemExit("FAIL: losses differ by %.2e relative (> %.0e)" % (err, REL_TOL))
    print("PASS")


# ---- fidelity cases ----------------------------------------------------------------------------
#
# Every field of GPT2Config and LlamaConfig in transformers 4.40.2 (and the PretrainedConfig
# fields those two models read) was judged by whether it changes the function from tokens to
# next-token log-probabilities of GPT2LMHeadModel / LlamaForCausalLM in eval mode:
#
# Change the math, so a case below covers each:
#   GPT-2: vocab_size, n_embd, n_layer, n_head (shapes: every case); n_positions (context and wpe
#     rows); n_inner; activation_function; layer_norm_epsilon; scale_attn_weights;
#     scale_attn_by_inverse_layer_idx; tie_word_embeddings; pruned_heads (PretrainedConfig:
#     per-layer head pruning, re-applied on load).
#   Llama: vocab_size, hidden_size, num_hidden_layers, num_attention_heads (shapes);
#     num_key_value_heads (GQA; absent = num_attention_heads); intermediate_size; hidden_act;
#     rms_norm_eps; rope_theta; rope_scaling (linear, dynamic); attention_bias;
#     tie_word_embeddings (Llama's default is untied); max_position_embeddings (chainrule's
#     context; RoPE itself does not depend on it without rope_scaling).
#   Same function, other arithmetic ("either": honouring it and rejecting it are both right):
#     GPT-2 activation_function "gelu_pytorch_tanh" (the tanh GELU that "gelu_new" is);
#     reorder_and_upcast_attn (only scales q before q.k and upcasts: equal in float32);
#     Llama pretraining_tp (splits the same matmuls into slices and sums them).
#
# Do not change the math (no case): resid_pdrop, embd_pdrop, attn_pdrop, attention_dropout,
#   summary_first_dropout (dropout: off in eval); initializer_range (initialisation only);
#   use_cache, output_attentions, output_hidden_states, use_return_dict (what is returned, not
#   its value); bos_token_id, eos_token_id, pad_token_id (generation / padding_idx only touches
#   the embedding's gradient and init); summary_type, summary_use_proj, summary_activation,
#   summary_proj_to_labels (GPT2DoubleHeadsModel only); n_ctx (legacy, unread); torch_dtype (the
#   oracle loads float32 and computes float64); attn_implementation (eager vs sdpa: the same
#   function); add_cross_attention (adds cross-attention weights that a causal LM without
#   encoder states never uses); head_dim and mlp_bias (read by later transformers releases,
#   ignored by 4.40.2, so this oracle cannot check them).

GPT2_BASE = dict(vocab_size=200, n_positions=32, n_embd=64, n_layer=2, n_head=4,
                 resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
LLAMA_BASE = dict(vocab_size=200, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                  tie_word_embeddings=False)  # rms_norm_eps 1e-6, rope_theta 10000: the defaults

VAL_TOKENS, TRAIN_TOKENS = 33, 1024  # one 32-token window (33 tokens: 32 inputs + 1 target)


def value_re(v):
    """A regex for a value as an error line may print it: the word itself."""
    return r"(?<![\w.])%s(?![\w])" % re.escape(v)


class Case:
    def __init__(self, name, family, overrides, expect, key=None, value=None, sensitive=False,
                 prepare=None, edit_config=None):
        self.name, self.family, self.overrides, self.expect = name, family, overrides, expect
        self.key = key          # reject: the config key the error line must name ...
        self.value = value      # ... and a regex its value must match
        self.sensitive = sensitive  # agree: ignoring the field must move the loss by > 100 x tol
        self.prepare = prepare  # f(model) after randomising, before saving
        self.edit_config = edit_config  # f(config dict) on the saved config.json


def prune_heads(model):
    model.prune_heads({0: [1]})


def drop_key(key):
    def edit(cfg):
        del cfg[key]
    return edit


CASES = [
    # ---- GPT-2 ----
    Case("gpt2_plain", "gpt2", {}, "agree"),
    Case("gpt2_untied_lm_head", "gpt2", dict(tie_word_embeddings=False), "agree", sensitive=True),
    Case("gpt2_layer_norm_epsilon", "gpt2", dict(layer_norm_epsilon=0.1), "agree", sensitive=True),
    Case("gpt2_n_inner_3C", "gpt2", dict(n_inner=3 * 64), "agree"),
    Case("gpt2_n_positions_64", "gpt2", dict(n_positions=64), "agree"),
    Case("gpt2_act_relu", "gpt2", dict(activation_function="relu"), "reject",
         "activation_function", value_re("relu")),
    Case("gpt2_act_gelu_exact", "gpt2", dict(activation_function="gelu"), "reject",
         "activation_function", value_re("gelu")),
    Case("gpt2_act_gelu_pytorch_tanh", "gpt2", dict(activation_function="gelu_pytorch_tanh"),
         "either", "activation_function", value_re("gelu_pytorch_tanh")),
    Case("gpt2_scale_attn_by_inverse_layer_idx", "gpt2", dict(scale_attn_by_inverse_layer_idx=True),
         "reject", "scale_attn_by_inverse_layer_idx", value_re("true")),
    Case("gpt2_scale_attn_weights_false", "gpt2", dict(scale_attn_weights=False), "reject",
         "scale_attn_weights", value_re("false")),
    Case("gpt2_reorder_and_upcast_attn", "gpt2", dict(reorder_and_upcast_attn=True), "either",
         "reorder_and_upcast_attn", value_re("true")),
    Case("gpt2_pruned_heads", "gpt2", {}, "reject", "pruned_heads", r"0.*1", prepare=prune_heads),
    # ---- Llama ----
    Case("llama_plain_gqa_untied", "llama", {}, "agree"),
    Case("llama_mqa", "llama", dict(num_key_value_heads=1), "agree"),
    Case("llama_no_kv_heads_key", "llama", dict(num_key_value_heads=4), "agree",
         edit_config=drop_key("num_key_value_heads")),
    Case("llama_tied", "llama", dict(tie_word_embeddings=True), "agree"),
    Case("llama_rms_norm_eps", "llama", dict(rms_norm_eps=0.1), "agree", sensitive=True),
    Case("llama_rope_theta", "llama", dict(rope_theta=500000.0), "agree", sensitive=True),
    Case("llama_attention_bias", "llama", dict(attention_bias=True), "agree"),
    Case("llama_max_position_embeddings_64", "llama", dict(max_position_embeddings=64), "agree"),
    Case("llama_act_gelu", "llama", dict(hidden_act="gelu"), "reject", "hidden_act",
         value_re("gelu")),
    Case("llama_rope_scaling_linear", "llama", dict(rope_scaling={"type": "linear", "factor": 2.0}),
         "reject", "rope_scaling", value_re("linear")),
    Case("llama_rope_scaling_dynamic", "llama", dict(rope_scaling={"type": "dynamic", "factor": 2.0}),
         "reject", "rope_scaling", value_re("dynamic")),
    Case("llama_pretraining_tp_2", "llama", dict(pretraining_tp=2), "either", "pretraining_tp",
         value_re("2")),
]


def make_config(family, overrides):
    if family == "gpt2":
        return GPT2Config(**{**GPT2_BASE, **overrides})
    return LlamaConfig(**{**LLAMA_BASE, **overrides})


def model_class(family):
    return GPT2LMHeadModel if family == "gpt2" else LlamaForCausalLM


@torch.no_grad()
def randomize(model, gen):
    """Weights far from transformers' init, so that every config field under test moves the loss:
    matrices N(0, 1/fan_in) (activations O(1) through the layers), embeddings and the LM head
    N(0, 0.4^2) (logits of std ~3: a sharp, far from uniform distribution), biases N(0, 0.1^2),
    and norm weights 1 + N(0, 0.2^2) (not 1), LayerNorm biases N(0, 0.1^2)."""
    def randn(t):
        return torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)

    for mod in model.modules():
        name = type(mod).__name__
        if isinstance(mod, Conv1D):  # GPT-2's [in, out] linear
            mod.weight.copy_(randn(mod.weight) / math.sqrt(mod.weight.shape[0]))
            mod.bias.copy_(0.1 * randn(mod.bias))
        elif isinstance(mod, torch.nn.Linear):
            if mod is model.get_output_embeddings():
                mod.weight.copy_(0.4 * randn(mod.weight))
            else:
                mod.weight.copy_(randn(mod.weight) / math.sqrt(mod.weight.shape[1]))
            if mod.bias is not None:
                mod.bias.copy_(0.1 * randn(mod.bias))
        elif isinstance(mod, torch.nn.Embedding):
            mod.weight.copy_(0.4 * randn(mod.weight))
        elif isinstance(mod, torch.nn.LayerNorm) or name.endswith("RMSNorm"):
            mod.weight.copy_(1.0 + 0.2 * randn(mod.weight))
            if getattr(mod, "bias", None) is not None:
                mod.bias.copy_(0.1 * randn(mod.bias))
    for n, p in model.named_parameters():  # nothing left at transformers' init
        if p.dim() == 1 and ("ln" in n or "norm" in n) and n.endswith("weight"):
            assert (p - 1).abs().max() > 0.05, n


def build_case(case, case_dir, seed):
    """Writes CASE_DIR/model (save_pretrained, safetensors) and CASE_DIR/data; returns the tokens."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = model_class(case.family)(make_config(case.family, case.overrides))
    model.tie_weights()
    randomize(model, gen)
    if case.prepare:
        case.prepare(model)
    model_dir = os.path.join(case_dir, "model")
    model.save_pretrained(model_dir, safe_serialization=True)
    if case.edit_config:
        path = os.path.join(model_dir, "config.json")
        with open(path) as f:
            cfg = json.load(f)
        case.edit_config(cfg)
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2)
    rng = np.random.default_rng(seed)
    V = model.config.vocab_size
    data_dir = os.path.join(case_dir, "data")
    os.makedirs(data_dir)
    write_shard(os.path.join(data_dir, "x_val_000000.bin"), rng.integers(0, V, VAL_TOKENS))
    write_shard(os.path.join(data_dir, "x_train_000000.bin"), rng.integers(0, V, TRAIN_TOKENS))
    return model_dir, data_dir


@torch.no_grad()
def ignorant_loss(case, model_dir, full, tails):
    """The loss a loader that ignores this case's fields would compute: the saved tensors in the
    base config's model. None where that loader could not even load them (shapes or names
    differ), i.e. ignoring the field fails loudly by itself."""
    from safetensors.torch import load_file
    sd = load_file(os.path.join(model_dir, "model.safetensors"))
    base_cfg = make_config(case.family, {})
    base = model_class(case.family)(base_cfg)
    want = base.state_dict()
    if base_cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)  # ignored by a tied loader
        want.pop("lm_head.weight", None)
    if set(sd) != set(want) or any(sd[k].shape != want[k].shape for k in sd):
        return None
    base.load_state_dict(sd, strict=False)
    base.tie_weights()
    base = base.double().eval()
    nats, count = hf_nats(base, full, tails)
    return nats / count


def run_case(case, args, seed):
    case_dir = os.path.join(args.work, case.name)
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    model_dir, data_dir = build_case(case, case_dir, seed)

    model = load_hf(model_dir)
    full, tails = eval_windows(data_dir, context_length(model.config))
    nats, count = hf_nats(model, full, tails)
    hf_loss = nats / count
    computed = bool(case.overrides) and case.expect != "either"  # nothing to ignore otherwise
    sens = ignorant_loss(case, model_dir, full, tails) if computed else None
    sens_rel = None if sens is None else rel_err(sens, hf_loss)

    proc = chainrule_eval(args.chainrule, model_dir, data_dir)
    stderr_lines = proc.stderr.splitlines()
    res = dict(hf=hf_loss, sens=sens_rel if computed else "-", cr=None, outcome=None, ok=False,
               why="")
    if proc.returncode == 0:
        try:
            cr_loss, cr_tokens = parse_eval_json(proc)
        except (ValueError, KeyError) as e:
            res.update(outcome="bad output", cr="unparsable --json output: %s" % e)
            return res
        res["cr"] = "%.9f" % cr_loss
        err = rel_err(cr_loss, hf_loss)
        if cr_tokens != count:
            res.update(outcome="mismatch", why="scored %d tokens, transformers %d" % (cr_tokens, count))
        elif err <= REL_TOL:
            res.update(outcome="agree", why="rel err %.1e" % err)
        else:
            res.update(outcome="mismatch", why="SILENT MISMATCH: rel err %.2e" % err)
        if proc.stderr.strip():
            res["why"] += "; stderr: %s" % " | ".join(stderr_lines)
    else:
        line = proc.stderr
        res["cr"] = "exit %d: %s" % (proc.returncode, " | ".join(stderr_lines) or "(no stderr)")
        clean = (0 < proc.returncode < 128 and len(stderr_lines) == 1 and line.endswith("\n")
                 and line.startswith("chainrule: error: "))
        # Match against the line with the case's own paths taken out: a case dir is named
        # after its case (and so after the key), which must not count as naming it.
        text = line.replace(case_dir, "CASE_DIR")
        if not clean:
            res.update(outcome="bad error",
                       why="not a clean error (want exit 1..127 and one stderr line "
                           "'chainrule: error: ...')")
        elif case.key and not re.search(r"(?<!\w)%s(?!\w)" % re.escape(case.key), text):
            res.update(outcome="bad error", why="the error does not name %s" % case.key)
        elif case.value and not re.search(case.value, text):
            res.update(outcome="bad error", why="the error does not give the value /%s/" % case.value)
        else:
            res.update(outcome="reject")

    if case.expect == "either":
        res["ok"] = res["outcome"] in ("agree", "reject")
    else:
        res["ok"] = res["outcome"] == case.expect
    if res["outcome"] in ("agree", "reject") and not res["ok"]:
        res["why"] = ("%s; expected %s" % (res["why"], case.expect)).lstrip("; ")
    if res["ok"] and case.expect == "agree" and case.sensitive:
        # The case must be able to fail: a loader ignoring the field would be caught.
        if sens_rel is None or not sens_rel > 100 * REL_TOL:
            res.update(ok=False, why="case too weak: ignoring the field moves the loss by %s"
                       % ("n/a" if sens_rel is None else "%.1e" % sens_rel))
    return res


def cmd_fidelity(args):
    cases = CASES
    if args.only:
        unknown = set(args.only) - {c.name for c in CASES}
        if unknown:
            raise SystemExit("unknown case(s): %s" % ", ".join(sorted(unknown)))
        cases = [c for c in CASES if c.name in args.only]
    if args.list:
        for c in cases:
            print("%-38s %-6s %-6s %s" % (c.name, c.family, c.expect,
                                          json.dumps(c.overrides) if c.overrides else ""))
        return 0
    os.makedirs(args.work, exist_ok=True)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    print("transformers %s, torch %s; chainrule %s; tolerance %.0e relative; 'ignored' = how far "
          "a loader ignoring the field would be off (n/a: it could not load the tensors)" % (transformers.__version__, torch.__version__,
                                                        args.chainrule, REL_TOL))
    fmt = "%-38s %-6s %-13s %-9s %-14s %s"
    print(fmt % ("case", "expect", "transformers", "ignored", "result", "chainrule"))
    failed = 0
    t0 = time.time()
    for case in cases:
        seed = zlib.crc32(case.name.encode()) & 0x7FFFFFFF
        try:
            r = run_case(case, args, seed)
        except subprocess.TimeoutExpired:
            r = dict(hf=float("nan"), sens=None, cr="timed out after %d s" % CHAINRULE_TIMEOUT_S,
                     outcome="timeout", ok=False, why="")
        failed += not r["ok"]
        sens = r["sens"] if isinstance(r["sens"], str) else (
            "n/a" if r["sens"] is None else "%.1e" % r["sens"])
        detail = r["cr"] + ("  (%s)" % r["why"] if r["why"] else "")
        print(fmt % (case.name, case.expect, "%.9f" % r["hf"], sens,
                     ("PASS " if r["ok"] else "FAIL ") + r["outcome"], detail), flush=True)
    print("%d passed, %d failed (%.1f s)" % (len(cases) - failed, failed, time.time() - t0))
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export-check", help="a chainrule run dir through transformers vs chainrule eval")
    e.add_argument("--chainrule", required=True, help="the chainrule binary")
    e.add_argument("--run", required=True, help="a finished chainrule train run dir")
    e.add_argument("--data", required=True, help="data dir whose *val*.bin shards to score")
    e.add_argument("--model-type", choices=["gpt2", "llama"], help="the model_type config.json must have")
    f = sub.add_parser("fidelity", help="the config-fidelity cases")
    f.add_argument("--chainrule", required=True, help="the chainrule binary")
    f.add_argument("--work", required=True, help="directory for the cases' models and data")
    f.add_argument("--only", nargs="+", metavar="NAME", help="run only these cases")
    f.add_argument("--list", action="store_true", help="list the cases and exit")
    args = ap.parse_args()
    if getattr(args, "chainrule", None):
        if not (os.path.isfile(args.chainrule) and os.access(args.chainrule, os.X_OK)):
            raise SystemExit("%s: not an executable chainrule binary" % args.chainrule)
        args.chainrule = os.path.abspath(args.chainrule)
    if args.command == "export-check":
        return cmd_export_check(args) or 0
    return cmd_fidelity(args)


if __name__ == "__main__":
    sys.exit(main())
