#!/usr/bin/python3
"""Writes a synthetic prompt->completion .jsonl whose completion is a deterministic function of
the prompt: the prompt's letters reversed. The conditional entropy H(completion | prompt) is 0,
so a model that reads its prompt can drive the completion loss towards 0, while the prompts
themselves (uniform random letters) carry about log(26) nats each.

Usage: make_pairs.py OUT.jsonl N [SEED]   (fields "prompt" and "completion")
"""
import json
import random
import sys


def main(argv):
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    out, n = argv[1], int(argv[2])
    rng = random.Random(int(argv[3]) if len(argv) == 4 else 1)
    with open(out, "w") as f:
        for _ in range(n):
            word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8)))
            f.write(json.dumps({"prompt": word + "=", "completion": word[::-1] + "."}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
