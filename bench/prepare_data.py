#!/usr/bin/env python3
"""prepare-data throughput: `nlpkit prepare-data` against the same steps in Python with HF
tokenizers (bench/hf_prepare.py), alternating, median of several rounds, in MB of input text
per second of wall time (whole process: start-up, reading, tokenizer training, encoding,
writing).

The input is tinyshakespeare repeated `--copies` times (20 copies: 22 MB).

    python3 bench/prepare_data.py [--rounds 3] [--copies 20] [--tokenizers bpe char]
"""
import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time

from recipe_run import ROOT
from torch_venv import torch_python

SOURCE = os.path.join(ROOT, "data/tinyshakespeare/input.txt")


def recipe_text(input_path, prepared, tokenizer, vocab_size):
    tok = f"{{type: bpe, vocab_size: {vocab_size}}}" if tokenizer == "bpe" else "{type: char}"
    return (f"output_dir: {prepared}_exp\n"
            f"data:\n  train: {input_path}\n  split: {{train: 0.9, valid: 0.05, test: 0.05}}\n"
            f"  prepared_dir: {prepared}\n  tokenizer: {tok}\n"
            "model: {type: gpt2, preset: gpt2-tiny}\ntrain: {max_steps: 1}\n")


def timed(cmd):
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--copies", type=int, default=20)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--tokenizers", nargs="+", default=["bpe", "char"])
    p.add_argument("--binary", default=os.path.join(ROOT, "target/release/nlpkit"))
    p.add_argument("--python", help="a python with tokenizers and numpy (default: .venv-torch, "
                                     "set up on first use)")
    args = p.parse_args()
    args.python = torch_python(args.python)
    with tempfile.TemporaryDirectory() as work:
        input_path = os.path.join(work, "input.txt")
        with open(SOURCE, encoding="utf-8") as f:
            text = f.read()
        with open(input_path, "w", encoding="utf-8") as f:
            f.write(text * args.copies)
        megabytes = os.path.getsize(input_path) / 1e6
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
              f"{megabytes:.1f} MB input, median of {args.rounds} alternating rounds\n")
        print("| tokenizer | nlpkit prepare-data s | MB/s | HF tokenizers (Python) s | MB/s | ratio |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for tokenizer in args.tokenizers:
            recipe = os.path.join(work, f"{tokenizer}.yaml")
            prepared = os.path.join(work, f"prepared_{tokenizer}")
            with open(recipe, "w") as f:
                f.write(recipe_text(input_path, prepared, tokenizer, args.vocab_size))
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(timed([args.binary, "prepare-data", recipe, "--force"]))
                theirs.append(timed([args.python, os.path.join(ROOT, "bench/hf_prepare.py"),
                                     input_path, os.path.join(work, f"hf_{tokenizer}"),
                                     "--tokenizer", tokenizer,
                                     "--vocab-size", str(args.vocab_size)]))
            a, b = statistics.median(ours), statistics.median(theirs)
            print(f"| {tokenizer} ({args.vocab_size if tokenizer == 'bpe' else 'chars'}) | {a:.2f} "
                  f"| {megabytes / a:.1f} | {b:.2f} | {megabytes / b:.1f} | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
