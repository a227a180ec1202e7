#!/usr/bin/env python3
"""ms/step of the shakespeare_char recipe's training step: nlpkit on each backend vs PyTorch.

Runs, alternating, `nlpkit train` on the real recipe (60 steps, a log line every 10) on each
backend this binary has, and bench/torch_gpt.py (the same model and batch) in PyTorch, for
several rounds; reports the median ms/step of each, tokens/s and the ratio to PyTorch.

    python3 bench/compare_pytorch.py [--rounds 3] [--backends flex ndarray tch] [--torch-python .venv-torch/bin/python]

The tch backend runs with target/release/nlpkit-tch (built by tools/build_tch.sh) unless
--tch-binary says otherwise.

PyTorch comes from a venv: `python3 -m venv .venv-torch && .venv-torch/bin/pip install torch==2.9.0`.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

from recipe_run import ROOT, train_windows

TOKENS_PER_STEP = 12 * 64


def nlpkit_ms_per_step(binary, backend, steps, workdir):
    windows = train_windows([], binary, steps, workdir, backend,
                            ["--set", f"backend.type={backend}"])
    return statistics.median(1000 * TOKENS_PER_STEP / w["tokens_per_s"] for w in windows)


def torch_ms_per_step(python, steps):
    script = os.path.join(ROOT, "bench/torch_gpt.py")
    result = subprocess.run([python, script, "--steps", str(steps)], check=True,
                            capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--backends", nargs="+", default=["flex", "ndarray"])
    p.add_argument("--binary", default=os.path.join(ROOT, "target/release/nlpkit"))
    p.add_argument("--tch-binary", default=os.path.join(ROOT, "target/release/nlpkit-tch"))
    p.add_argument("--torch-python", default=os.path.join(ROOT, ".venv-torch/bin/python"))
    args = p.parse_args()
    results = {b: [] for b in args.backends + ["pytorch"]}
    torch_info = {}
    with tempfile.TemporaryDirectory() as workdir:
        for round_index in range(args.rounds):
            for backend in args.backends:
                binary = args.tch_binary if backend == "tch" else args.binary
                results[backend].append(nlpkit_ms_per_step(binary, backend, args.steps, workdir))
            torch_info = torch_ms_per_step(args.torch_python, args.steps - 10)
            results["pytorch"].append(torch_info["ms_per_step"])
            print(f"round {round_index + 1}: " + ", ".join(f"{k} {v[-1]:.1f} ms" for k, v in results.items()),
                  file=sys.stderr)
    torch_ms = statistics.median(results["pytorch"])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"torch {torch_info.get('torch')} with {torch_info.get('threads')} threads; "
          f"median of {args.rounds} rounds")
    print("| backend | ms/step | tokens/s | speed vs PyTorch |")
    print("| --- | --- | --- | --- |")
    for backend, values in results.items():
        ms = statistics.median(values)
        print(f"| {backend} | {ms:.1f} | {1000 * TOKENS_PER_STEP / ms:.0f} | {torch_ms / ms:.2f}x |")


if __name__ == "__main__":
    main()
