"""Reads a run's TensorBoard event files with TensorBoard's own reader and checks them against
the run's metrics.jsonl (tests/cli/tensorboard.sh runs it with the reference venv's python).

Usage: tensorboard_check.py RUN_DIR FINAL_SAMPLE_FILE

The tag of each metrics.jsonl number (launcher/train_loop.cpp, MetricsLog): train/KEY for a
"train" line, val/KEY (less the val_ prefix) for an "eval" line, norms/param/GROUP and
norms/grad/GROUP for a "norms" line, samples/text for a "sample" line (as a Markdown code block). A "resume" line at step s
supersedes the earlier lines of steps after s, as the event files' SessionLog START at s + 1
makes TensorBoard's reader drop its records of those steps (tensorboard.sh arranges some).
"""
import glob
import json
import os
import shutil
import struct
import sys
import tempfile

import numpy as np
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow

EXPECTED_TAGS = [
    "train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/ms_per_step",
    "train/model_tflops", "train/mfu", "val/loss", "val/bits_per_token", "val/bits_per_byte",
    "norms/param/layer_00", "norms/param/layer_01", "norms/grad/layer_00", "norms/grad/layer_01",
    "norms/param/embedding", "norms/grad/embedding", "norms/param/position_embedding",
    "norms/param/final_norm", "norms/grad/final_norm",
]


def fail(msg):
    sys.exit("FAIL: " + msg)


def expected_from_metrics(path):
    """{tag: [(step, value)]} and [(step, text)] from metrics.jsonl, in file order."""
    scalars, texts = {}, []

    def walk(tag, v, step):
        if isinstance(v, bool) or v is None:
            return
        if isinstance(v, (int, float)):
            scalars.setdefault(tag, []).append((step, float(v)))
        elif isinstance(v, dict):
            for k, x in v.items():
                if k not in ("type", "step"):
                    walk(tag + "/" + (k[4:] if k.startswith("val_") else k), x, step)

    for line in open(path, encoding="utf-8"):
        j = json.loads(line)
        t, step = j.get("type"), j.get("step")
        if t == "resume":
            for tag in scalars:
                scalars[tag] = [(s, v) for s, v in scalars[tag] if s <= step]
            texts = [(s, x) for s, x in texts if s <= step]
        elif t == "sample":
            texts.append((step, j["text"]))
        elif t in ("train", "eval", "norms"):
            walk("val" if t == "eval" else t, j, step)
    return scalars, texts


def load(run):
    acc = event_accumulator.EventAccumulator(
        run, size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0})
    acc.Reload()
    return acc


def check_run(run, final_sample):
    want, want_texts = expected_from_metrics(os.path.join(run, "metrics.jsonl"))
    acc = load(run)
    got_tags = set(acc.Tags()["scalars"])
    if got_tags != set(want):
        fail("scalar tags differ: only in the event files %s, only in metrics.jsonl %s"
             % (sorted(got_tags - set(want)), sorted(set(want) - got_tags)))
    missing = [t for t in EXPECTED_TAGS if t not in got_tags]
    if missing:
        fail("expected tags missing: %s (have %s)" % (missing, sorted(got_tags)))
    for tag, pairs in want.items():
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        # The event file holds float32; metrics.jsonl the double the trainer printed.
        exp = [(s, float(np.float32(v))) for s, v in pairs]
        if got != exp:
            fail("%s: event files %s\n  metrics.jsonl %s" % (tag, got[:8], exp[:8]))
    train_steps = [e.step for e in acc.Scalars("train/loss")]
    if train_steps != list(range(1, 41)):
        fail("train/loss steps are %s, expected 1..40 once each" % train_steps)
    # What the purge removed: the killed run's records of steps 11-15, flushed before the kill.
    unpurged = event_accumulator.EventAccumulator(
        run, size_guidance={event_accumulator.SCALARS: 0}, purge_orphaned_data=False).Reload()
    twice = sorted(s for s in set(e.step for e in unpurged.Scalars("train/loss"))
                   if [e.step for e in unpurged.Scalars("train/loss")].count(s) > 1)
    if twice != list(range(11, 16)):
        fail("without the purge the steps recorded twice are %s, expected 11..15" % twice)

    texts = [(e.step, e.tensor_proto.string_val[0].decode("utf-8")) for e in acc.Tensors("samples/text")]
    # Each sample as a Markdown code block: every line indented by 4 spaces.
    if texts != [(s, "    " + x.replace("\n", "\n    ")) for s, x in want_texts]:
        fail("samples/text: event files %s\n  metrics.jsonl %s" % (texts, want_texts))
    eval_steps = [s for s, _ in want["val/loss"]]
    if [s for s, _ in texts] != eval_steps:
        fail("text samples at steps %s, evaluations at %s" % ([s for s, _ in texts], eval_steps))
    meta = acc.SummaryMetadata("samples/text")
    if meta.plugin_data.plugin_name != "text":
        fail("samples/text is for plugin '%s', expected 'text'" % meta.plugin_data.plugin_name)
    sample = open(final_sample, encoding="utf-8").read()
    if sample != want_texts[-1][1] + "\n":
        fail("the final sample %r is not what `chainrule sample` prints: %r" % (want_texts[-1][1], sample))
    print("-- %d scalar tags, %d points, equal to metrics.jsonl; %d text samples; final sample %r"
          % (len(want), sum(len(p) for p in want.values()), len(texts), want_texts[-1][1][:40]))


def records(data):
    """(offset, length) of each TFRecord's payload."""
    out, at = [], 0
    while at < len(data):
        (n,) = struct.unpack_from("<Q", data, at)
        out.append((at + 12, n))
        at += 12 + n + 4
    return out


def points(acc):
    return sum(len(acc.Scalars(t)) for t in acc.Tags()["scalars"])


def negative_control(run):
    """A flipped payload byte: the reader reports a data loss and keeps only the records before."""
    first = sorted(glob.glob(os.path.join(run, "events.out.tfevents.*")))[0]
    data = bytearray(open(first, "rb").read())
    recs = records(bytes(data))
    k = len(recs) // 2
    off, n = recs[k]
    data[off + n // 2] ^= 0x20
    d = tempfile.mkdtemp()
    try:
        bad = os.path.join(d, os.path.basename(first))
        open(bad, "wb").write(data)
        reader = pywrap_tensorflow.PyRecordReader_New(bad)
        read = 0
        try:
            while True:
                reader.GetNext()
                read += 1
        except errors.DataLossError as e:
            if read != k:
                fail("negative control: the data loss came after %d records, expected %d" % (read, k))
            print("-- negative control: record %d of %d with a flipped byte: %s" % (k, len(recs), e.message))
        except errors.OutOfRangeError:
            fail("negative control: the flipped byte in record %d went unnoticed" % k)
        n_bad = points(load(d))
        shutil.copy(first, bad)
        n_good = points(load(d))
        if not n_bad < n_good:
            fail("negative control: the corrupted file gave %d scalar points, the intact one %d" % (n_bad, n_good))
        print("-- negative control: EventAccumulator kept %d of %d points" % (n_bad, n_good))
    finally:
        shutil.rmtree(d)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    run, final_sample = sys.argv[1:]
    check_run(run, final_sample)
    negative_control(run)


if __name__ == "__main__":
    main()
