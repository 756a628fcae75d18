#!/usr/bin/env python3
"""Writes the text of llm.c token shards (char or byte tokenizer from dataset.json), leaving out
the end-of-text tokens: the raw text a split holds. Used by bench/compress/run.sh.

    shard_text.py DATA_DIR SPLIT OUT.txt
"""
import json
import pathlib
import struct
import sys

data, split, out = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
info = json.loads((data / "dataset.json").read_text())
tok = info["tokenizer"]
kind = tok["type"]
if kind not in ("char", "byte"):
    sys.exit(f"shard_text.py: {kind} tokenizer: only char and byte are supported here")
eot = tok.get("eot")
pieces = []
shards = sorted(p for p in data.glob(f"*_{split}_*.bin"))
if not shards:
    sys.exit(f"shard_text.py: no {split} shards in {data}")
for path in shards:
    raw = path.read_bytes()
    header = struct.unpack("<256i", raw[:1024])
    version, n = header[1], header[2]
    width = 2 if version == 1 else 4
    ids = struct.unpack(f"<{n}{'H' if width == 2 else 'I'}", raw[1024:1024 + n * width])
    if kind == "char":
        chars = tok["chars"]
        pieces.append("".join(chr(chars[i]) for i in ids if i != eot).encode("utf-8"))
    else:
        pieces.append(bytes(i for i in ids if i != eot))
pathlib.Path(out).write_bytes(b"".join(pieces))
