"""Tokenizer parity: chainrule's tokenizers (through tests/reference/tokenize_dump) against the
Hugging Face `tokenizers` and `sentencepiece` Python packages (pinned in venv.sh).

  python tokenizer_parity.py --dump build/bin/tokenize_dump --work DIR

1. Byte-level BPE tokenizer.json files trained here with `tokenizers` on a generated multilingual
   text (accents, Cyrillic, Greek, Arabic, CJK, Korean, emoji with ZWJ and flags, digits, runs of
   spaces, tabs, CR LF, NEL, NBSP, ideographic space, contractions in both cases, and the special
   tokens in the middle of the text):
     gpt2     ByteLevel(use_regex) pre-tokenizer, GPT-2's pattern; "a b" merges
     llama3   Sequence[Split(Llama 3's pattern, Isolated), ByteLevel(use_regex=False)],
              ignore_merges, <|begin_of_text|> / <|end_of_text|>
     gpt2split  Sequence[Split(GPT-2's pattern written out), ByteLevel(use_regex=False)] with
              add_prefix_space, a non-special added token with lstrip/rstrip, and merges as
              ["a", "b"] pairs (the tokenizers >= 0.20 format)
   For each: token ids equal tokenizers' encode(text, add_special_tokens=False), and
   decode(encode(x)) == x byte for byte (checked by tokenize_dump). Also: ByteLevel's own
   pre-tokenization equals a Split on GPT-2's pattern written out (so the pattern chainrule
   compiles is the one tokenizers applies).
2. Negative control: the gpt2 tokenizer with its merges in reverse order must NOT match.
3. SentencePiece: a model trained by chainrule (libsentencepiece's C++ trainer) and loaded by
   the sentencepiece package gives the same ids, and decodes back to the text.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from tokenizers import AddedToken

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

WORDS = [
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "It's", "they're", "WE'LL",
    "I'M", "you've", "she'd", "café", "naïve", "Ångström", "straße", "façade", "résumé",
    "Привет", "мир", "Καλημέρα", "κόσμε", "مرحبا", "بالعالم", "中文", "日本語", "ひらがな",
    "カタカナ", "한국어", "안녕하세요", "😀", "👩‍💻", "🇫🇷", "🙂🙂", "1234567", "3.14159", "2024",
    "x²", "½", "—", "“quoted”", "<tag>", "a_b", "don't", "O'Neil", "e-mail", "#hash", "$100",
    "(parens)", "[brackets]", "{braces}", "\u00a0nbsp", "ideo\u3000space", "nel\u0085line", "\u0085nel", "\u2028ls",
]
SEPARATORS = [" ", " ", " ", " ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\r\n", "    ", "\n   "]


def make_text(seed, n_words):
    rng = random.Random(seed)
    parts = []
    for i in range(n_words):
        parts.append(rng.choice(WORDS))
        parts.append(rng.choice(SEPARATORS))
        if i % 97 == 50:
            parts.append("<|endoftext|>")
        if i % 131 == 70:
            parts.append(rng.choice([" <|end_of_text|>", "<|begin_of_text|>\n", "[CODE]", " [CODE] "]))
    return "".join(parts)


def train_bpe(pre_tokenizer, specials, corpus, ignore_merges=False):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    return tok


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(r.stdout)
    if r.returncode != 0:
        sys.exit("FAIL: %s exited %d: %s" % (cmd[0], r.returncode, r.stderr.strip()))
    return r.stdout


def ours(dump, spec, text_path, work, name):
    """Our ids, and whether decode(encode(x)) == x (and decode_one, byte counts) held."""
    ids_path = os.path.join(work, name + ".ids")
    out = run([dump, "encode", spec, text_path, ids_path])
    with open(ids_path) as f:
        return [int(x) for x in f.read().split()], "round_trip 1" in out


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    t0 = time.time()
    failures = []

    corpus = [make_text(s, 400) for s in range(40)]
    text = make_text(1234, 3000) + "   \n\n  trailing spaces   "
    text_path = os.path.join(args.work, "text.txt")
    with open(text_path, "w", encoding="utf-8", newline="") as f:
        f.write(text)

    # ByteLevel's built-in regex is GPT-2's pattern as written in bpe_tokenizer.cpp.
    builtin = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    written = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    if builtin.pre_tokenize_str(text) != written.pre_tokenize_str(text):
        failures.append("ByteLevel's regex differs from GPT-2's pattern as written")

    gpt2 = train_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), ["<|endoftext|>"], corpus)
    llama3 = train_bpe(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
        ["<|begin_of_text|>", "<|end_of_text|>"], corpus, ignore_merges=True)
    gpt2split = train_bpe(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False)]),
        ["<|endoftext|>"], corpus)
    gpt2split.add_tokens([AddedToken("[CODE]", lstrip=True, rstrip=True, normalized=False)])

    # gpt2split cannot round-trip: add_prefix_space adds spaces and lstrip/rstrip drop them.
    cases = [("gpt2", gpt2, None), ("llama3", llama3, None), ("gpt2split", gpt2split, "pairs")]
    for name, tok, merges_format in cases:
        lossless = name != "gpt2split"
        path = os.path.join(args.work, name + ".tokenizer.json")
        tok.save(path)
        if merges_format == "pairs":  # the tokenizers >= 0.20 layout of merges
            with open(path, encoding="utf-8") as f:
                j = json.load(f)
            j["model"]["merges"] = [m.split(" ") for m in j["model"]["merges"]]
            with open(path, "w", encoding="utf-8") as f:
                json.dump(j, f, ensure_ascii=False)
        want = tok.encode(text, add_special_tokens=False).ids
        if lossless and tok.decode(want, skip_special_tokens=False) != text:
            failures.append("%s: tokenizers itself does not round-trip the text" % name)
        got, round_trip = ours(args.dump, "hf:" + path, text_path, args.work, name)
        if lossless and not round_trip:
            failures.append("%s: decode(encode(x)) != x" % name)
        if got != want:
            i = first_difference(got, want)
            failures.append("%s: ids differ at %d of %d/%d: ours %s, tokenizers %s" % (
                name, i, len(got), len(want), got[i:i + 5], want[i:i + 5]))
        else:
            print("tokenizer_parity: %-9s %d ids equal tokenizers' (vocab %d)" % (
                name, len(want), tok.get_vocab_size()))

    # Negative control: the same vocab with the merges' ranks reversed must not match.
    with open(os.path.join(args.work, "gpt2.tokenizer.json"), encoding="utf-8") as f:
        j = json.load(f)
    j["model"]["merges"] = j["model"]["merges"][::-1]
    bad_path = os.path.join(args.work, "gpt2_reversed.tokenizer.json")
    with open(bad_path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    got, _ = ours(args.dump, "hf:" + bad_path, text_path, args.work, "gpt2_reversed")
    if got == gpt2.encode(text, add_special_tokens=False).ids:
        failures.append("negative control: reversed merges still match (the test is blind)")
    else:
        print("tokenizer_parity: negative control: reversed merge ranks differ, as they must")

    # SentencePiece: trained by chainrule's C++ trainer, encoded by the Python package.
    import sentencepiece as spm
    train_path = os.path.join(args.work, "sp_train.txt")
    with open(train_path, "w", encoding="utf-8", newline="") as f:
        f.write("\n".join(corpus))
    model_path = os.path.join(args.work, "sp.model")
    run([args.dump, "train-sp", train_path, "600", model_path])
    sp = spm.SentencePieceProcessor(model_file=model_path)
    want = sp.encode(text)
    got, round_trip = ours(args.dump, "sp:" + model_path, text_path, args.work, "sp")
    if sp.decode(want) != text:
        failures.append("sp: the sentencepiece package does not round-trip the text")
    if not round_trip:
        failures.append("sp: decode(encode(x)) != x")
    if got != want:
        i = first_difference(got, want)
        failures.append("sp: ids differ at %d: ours %s, sentencepiece %s" % (
            i, got[i:i + 5], want[i:i + 5]))
    else:
        print("tokenizer_parity: sp        %d ids equal sentencepiece's (vocab %d)" % (
            len(want), sp.get_piece_size()))

    print("tokenizer_parity: %.1f s" % (time.time() - t0))
    if failures:
        print("FAIL:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("tokenizer_parity: PASS")


if __name__ == "__main__":
    main()
