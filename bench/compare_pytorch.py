#!/usr/bin/env python3
"""Training-step speed and peak memory: nlpkit on each backend against PyTorch, side by side.

For each model, runs alternating, for several rounds: nlpkit on every backend asked for, then the
same model and batch in PyTorch (bench/torch_gpt.py, bench/torch_encoder.py). Prints the median
ms/step, tokens/s, peak RSS and the ratio to PyTorch as a Markdown table.

Models:
  gpt          the shakespeare_char recipe's step (4 layers, 128 wide, batch 12 x 64 tokens)
  gpt-256      the issue's probe: 4 layers, 256 wide, 4 heads, batch 16 x 128 tokens
  encoder      2 BERT-base-shaped encoder layers (768 wide, 12 heads, ffn 3072), batch 8 x 128
  transformer  the cmn_en recipe's seq2seq Transformer (2+2 layers, 256 wide), batch 64 x 32
  gru          the cmn_en recipe's GRU encoder-decoder with attention, batch 64 x 32
  bert-mlm     BERT-base pretraining (12 layers, MLM on 15% of the positions + NSP), 8 x 128

    python3 bench/compare_pytorch.py [--models gpt ...] [--backends flex ndarray tch]
                                     [--rounds 3] [--no-compile]

The default build has flex only: `--backends ndarray` needs `cargo build --release --features
ndarray` (and the step example built the same way).

nlpkit's GPT steps are timed by `nlpkit train` itself (metrics.jsonl, the first log window
dropped); the other models' by `examples/model_step.rs` (build it with
`cargo build --release --example model_step`). The tch backend uses target/release/nlpkit-tch
and target/release/examples/model_step-tch (tools/build_tch.sh builds both).
PyTorch comes from .venv-torch, which the script creates on first use (bench/torch_venv.py);
`--torch-python` names another interpreter with torch instead. Each round also runs the
PyTorch twin under torch.compile (inductor; its compilation falls in the warm-up steps), the
higher anchor, unless `--no-compile`. Tokens per step count the inputs (for the encoder-decoders,
the target tokens, as fairseq's words per second do).
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
from torch_venv import torch_python

RELEASE = os.path.join(ROOT, "target/release")

# name: (tokens per step, nlpkit recipe overrides, bench/torch_gpt.py arguments, steps)
GPTS = {
    "gpt": (12 * 64, [], [], 60),
    "gpt-256": (16 * 128, ["--set", "model.n_embd=256", "--set", "model.block_size=128",
                           "--set", "train.batch_size=16"],
                ["--width", "256", "--block", "128", "--batch", "16"], 30),
}
# name: (tokens per step, the shape arguments both sides take, the PyTorch twin and its own
# arguments); every twin takes --steps, --warmup and the shape arguments of examples/model_step.
STEPPED = {
    "encoder": (8 * 128, ["--layers", "2", "--batch", "8", "--seq", "128"],
                "torch_encoder.py", []),
    "transformer": (64 * 32, ["--layers", "2", "--batch", "64", "--seq", "32"],
                    "torch_seq2seq.py", ["--model", "transformer"]),
    "gru": (64 * 32, ["--batch", "64", "--seq", "32"], "torch_seq2seq.py", ["--model", "gru"]),
    "bert-mlm": (8 * 128, ["--layers", "12", "--batch", "8", "--seq", "128"], "torch_bert.py", []),
}


def run_measured(cmd, **kwargs):
    """Run `cmd`; return its stdout and its peak resident set size in MB."""
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, **kwargs)
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {process.returncode}")
    return stdout, usage.ru_maxrss / 1024


def binary(name, backend):
    suffix = "-tch" if backend == "tch" else ""
    return os.path.join(RELEASE, name + suffix)


def nlpkit_gpt(model, backend, workdir):
    tokens, overrides, _, steps = GPTS[model]
    peak = {}

    def runner(cmd, **kwargs):
        _, peak["rss"] = run_measured(cmd, **kwargs)

    windows = train_windows([], binary("nlpkit", backend), steps, workdir, f"{model}_{backend}",
                            ["--set", f"backend.type={backend}"] + overrides, run=runner)
    ms = statistics.median(1000 * tokens / w["tokens_per_s"] for w in windows)
    return ms, peak["rss"]


def nlpkit_stepped(model, backend):
    _, shape, _, _ = STEPPED[model]
    cmd = [binary("examples/model_step", backend), "--model", model, "--backend", backend] + shape
    stdout, rss = run_measured(cmd)
    return json.loads(stdout.strip().splitlines()[-1])["ms_per_step"], rss


def torch_step(python, model, compile_it=False):
    if model in STEPPED:
        _, shape, twin, own = STEPPED[model]
        cmd = [python, os.path.join(ROOT, "bench", twin)] + own + shape
        if model == "bert-mlm":
            cmd += ["--steps", "3"]
    else:
        _, _, args, steps = GPTS[model]
        cmd = [python, os.path.join(ROOT, "bench/torch_gpt.py"), "--steps", str(steps - 10)] + args
    if compile_it:
        # More warm-up: the first calls compile, and a shape seen again may recompile once.
        cmd += ["--compile", "--warmup", "3"]
    stdout, rss = run_measured(cmd)
    info = json.loads(stdout.strip().splitlines()[-1])
    return info["ms_per_step"], rss, info


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--models", nargs="+", default=list(GPTS) + list(STEPPED),
                   choices=list(GPTS) + list(STEPPED))
    p.add_argument("--backends", nargs="+", default=["flex"])
    p.add_argument("--no-compile", action="store_true",
                   help="leave out the torch.compile row (its first compilation takes minutes)")
    p.add_argument("--torch-python", help="a python with torch (default: .venv-torch, set up "
                                            "on first use)")
    args = p.parse_args()
    args.torch_python = torch_python(args.torch_python)
    torch_info = {}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"median of {args.rounds} alternating rounds")
    with tempfile.TemporaryDirectory() as workdir:
        for model in args.models:
            tokens = STEPPED[model][0] if model in STEPPED else GPTS[model][0]
            anchors = ["pytorch"] + ([] if args.no_compile else ["pytorch compile"])
            results = {b: [] for b in args.backends + anchors}
            for round_index in range(args.rounds):
                for backend in args.backends:
                    if model in STEPPED:
                        results[backend].append(nlpkit_stepped(model, backend))
                    else:
                        results[backend].append(nlpkit_gpt(model, backend, workdir))
                ms, rss, torch_info = torch_step(args.torch_python, model)
                results["pytorch"].append((ms, rss))
                if not args.no_compile:
                    ms, rss, _ = torch_step(args.torch_python, model, compile_it=True)
                    results["pytorch compile"].append((ms, rss))
                print(f"{model} round {round_index + 1}: " +
                      ", ".join(f"{k} {v[-1][0]:.1f} ms" for k, v in results.items()),
                      file=sys.stderr)
            torch_ms = statistics.median(ms for ms, _ in results["pytorch"])
            torch_rss = statistics.median(rss for _, rss in results["pytorch"])
            print(f"\n{model}: torch {torch_info.get('torch')} with {torch_info.get('threads')} "
                  f"threads, {torch_info.get('params')} parameters, {tokens} tokens per step\n")
            compile_ms = (None if args.no_compile else
                          statistics.median(ms for ms, _ in results["pytorch compile"]))
            print("| backend | ms/step | tokens/s | speed vs PyTorch | vs torch.compile "
                  "| peak RSS MB | RSS vs PyTorch |")
            print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
            for backend, values in results.items():
                ms = statistics.median(v[0] for v in values)
                rss = statistics.median(v[1] for v in values)
                versus_compile = "" if compile_ms is None else f"{compile_ms / ms:.2f}x"
                print(f"| {backend} | {ms:.1f} | {1000 * tokens / ms:.0f} | {torch_ms / ms:.2f}x "
                      f"| {versus_compile} | {rss:.0f} | {rss / torch_rss:.2f}x |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
