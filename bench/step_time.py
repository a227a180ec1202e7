#!/usr/bin/env python3
"""Training-step time of several nlpkit binaries on the shakespeare_char recipe, alternating:
for comparing builds (e.g. before and after a change, each built from its commit and copied).

    python3 bench/step_time.py BINARY... [--rounds 3] [--steps 60] [--backend flex]
        [--set model.n_embd=256 --set ...]   (recipe overrides, e.g. compare_pytorch's gpt-256)

Prints the median over rounds of the median log window (10 steps, the first window dropped).
"""
import argparse
import os
import statistics
import tempfile

from recipe_run import train_windows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("binaries", nargs="+")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--backend", default="flex")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a recipe override for every binary (repeatable)")
    args = p.parse_args()
    times = {b: [] for b in args.binaries}
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.rounds):
            for index, binary in enumerate(args.binaries):
                windows = train_windows([], os.path.abspath(binary), args.steps, workdir, str(index),
                                        ["--set", f"backend.type={args.backend}"]
                                        + [x for kv in args.set for x in ("--set", kv)])
                times[binary].append(statistics.median(w["step_ms"] for w in windows))
    print("| binary | ms/step (median) | rounds |")
    print("| --- | ---: | --- |")
    for binary, values in times.items():
        rounds = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {binary} | {statistics.median(values):.1f} | {rounds} |")


if __name__ == "__main__":
    main()
