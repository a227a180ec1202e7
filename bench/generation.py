#!/usr/bin/env python3
"""Generation speed: nlpkit's KV cache against nanoGPT-style full recompute, 256 new tokens.

Trains the shakespeare_char recipe's model for a few steps with a block of 512 positions (so
256 new tokens fit without cropping the context), then runs `nlpkit generate` alternating with
and without `--no-kv-cache` for several rounds and prints the median tokens/s of each and the
speed-up. Same prompt, seed and sampler; the texts are checked to be identical.

    python3 bench/generation.py [--rounds 3] [--new-tokens 256] [--backend flex]
"""
import argparse
import os
import platform
import re
import statistics
import subprocess
import tempfile

from recipe_run import ROOT, train_windows

SHAPES = {
    "gpt2-tiny (4 x 128)": [],
    "6 x 384": ["--set", "model.n_layer=6", "--set", "model.n_embd=384", "--set", "model.n_head=6"],
}


def generate(binary, exp, new_tokens, cached):
    cmd = [binary, "generate", exp, "--prompt", "ROMEO:", "--max-new-tokens", str(new_tokens),
           "--seed", "1"] + ([] if cached else ["--no-kv-cache"])
    result = subprocess.run(cmd, check=True, capture_output=True, text=True)
    rate = float(re.search(r"\(([\d.]+) tokens/s", result.stderr).group(1))
    return rate, result.stdout


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--backend", default="flex")
    p.add_argument("--binary", default=os.path.join(ROOT, "target/release/nlpkit"))
    args = p.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{args.backend}, {args.new_tokens} new tokens after a 6-token prompt, median of "
          f"{args.rounds} alternating rounds\n")
    print("| model | KV cache tokens/s | full recompute tokens/s | speed-up |")
    print("| --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as workdir:
        for name, overrides in SHAPES.items():
            tag = re.sub(r"\W+", "_", name)
            train_windows([], args.binary, 20, workdir, tag,
                          ["--set", f"backend.type={args.backend}", "--set", "model.block_size=512",
                           "--set", "train.save_interval=20"] + overrides)
            exp = os.path.join(workdir, f"exp_{tag}")
            cached, full = [], []
            for _ in range(args.rounds):
                rate, text_cached = generate(args.binary, exp, args.new_tokens, True)
                cached.append(rate)
                rate, text_full = generate(args.binary, exp, args.new_tokens, False)
                full.append(rate)
                if text_cached != text_full:
                    raise SystemExit(f"{name}: the KV cache and full recompute disagree")
            c, f = statistics.median(cached), statistics.median(full)
            print(f"| {name} | {c:.0f} | {f:.0f} | {c / f:.1f}x |")


if __name__ == "__main__":
    main()
