#!/usr/bin/env python3
"""Summarise `nlpkit eval` reports: one row per experiment folder, from its latest
eval_test_*.json, with the training wall time and throughput from its metrics.jsonl."""
import glob
import json
import os
import sys


def latest_report(exp):
    reports = sorted(glob.glob(os.path.join(exp, "eval_test_step_*.json")))
    if not reports:
        sys.exit("no eval_test_*.json in {}; run `nlpkit eval {}` first".format(exp, exp))
    with open(reports[-1]) as f:
        return json.load(f)


def training(exp):
    """(wall seconds, mean tokens/s over the logged windows, steps) of the training run."""
    elapsed, speeds, steps = 0.0, [], 0
    with open(os.path.join(exp, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r.get("split") == "train":
                elapsed = max(elapsed, r.get("elapsed_s", 0.0))
                speeds.append(r["tokens_per_s"])
                steps = r["step"]
    return elapsed, sum(speeds) / max(len(speeds), 1), steps


rows = []
for exp in sys.argv[1:]:
    r = latest_report(exp)
    seconds, tokens_per_s, steps = training(exp)
    if "accuracy" in r:
        scores = "accuracy {:.4f}  macro-F1 {:.4f}".format(r["accuracy"], r["macro_f1"])
    elif "entity_f1" in r:
        scores = "P {:.4f}  R {:.4f}  F1 {:.4f}".format(
            r["entity_precision"], r["entity_recall"], r["entity_f1"])
    else:
        scores = "MLM loss {:.4f}  MLM acc {:.4f}".format(r["mlm_loss"], r["mlm_accuracy"])
    rows.append("{:<22} {}  | {} steps in {:.0f} s, {:.0f} tokens/s".format(
        os.path.basename(exp.rstrip("/")), scores, steps, seconds, tokens_per_s))
print("\n".join(rows))
