#!/usr/bin/env python3
"""Data-parallel scaling: samples/s of 1 process against 2 MPI ranks, and the all-reduce's share.

Trains the shakespeare_char recipe (and a wider model on the same data, whose gradients are
larger) for a few dozen steps: in one process with the recipe's batch, on N ranks with that batch
per rank (the global batch grows: weak scaling), and on N ranks with the recipe's batch split
across them (the same global batch: strong scaling). Reports the median over log windows (the
first, with start-up, is dropped) of samples/s, ms/step and ms/step in the gradient all-reduce
(waiting for the slowest rank included), for several alternating rounds.

    cargo build --release --features mpi
    python3 bench/data_parallel.py [--ranks 2] [--rounds 3] [--steps 60]

Needs OpenMPI's mpirun. On a machine with fewer cores than ranks x threads, the ranks share
the cores (each rank's thread pool gets cores / ranks threads), which bounds the scaling.
"""
import argparse
import os
import platform
import statistics
import tempfile

from recipe_run import ROOT, train_windows

BLOCK = 64

MODELS = {
    # The recipe's model: 4 layers, 128 wide (0.8M parameters).
    "gpt2-tiny": [],
    # nanoGPT's shakespeare_char GPU width at block 64: 6 layers, 384 wide (10.7M parameters).
    "6x384": ["--set", "model.n_layer=6", "--set", "model.n_head=6", "--set", "model.n_embd=384"],
}


def run(binary, ranks, scope, model_args, steps, workdir, tag):
    launcher = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(ranks)] if ranks > 1 else []
    windows = train_windows(launcher, binary, steps, workdir, tag,
                            ["--set", f"distributed.batch_size_is={scope}"] + model_args)
    return {
        "samples_per_s": statistics.median(w["tokens_per_s"] / BLOCK for w in windows),
        "step_ms": statistics.median(w["step_ms"] for w in windows),
        "allreduce_ms": statistics.median(w.get("allreduce_ms", 0.0) for w in windows),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--binary", default=os.path.join(ROOT, "target/release/nlpkit"))
    p.add_argument("--models", nargs="+", default=list(MODELS))
    args = p.parse_args()

    n = args.ranks
    setups = [
        ("1 process, batch 12", 1, "per_rank"),
        (f"{n} ranks x 12 (global {12 * n})", n, "per_rank"),
        (f"{n} ranks, global 12", n, "global"),
    ]
    print(f"# {platform.node()}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}")
    with tempfile.TemporaryDirectory() as workdir:
        for model in args.models:
            results = {label: [] for label, _, _ in setups}
            for _ in range(args.rounds):
                for i, (label, ranks, scope) in enumerate(setups):
                    tag = f"{model}_{i}"
                    results[label].append(
                        run(args.binary, ranks, scope, MODELS[model], args.steps, workdir, tag))
            print(f"\n## {model}: median of {args.rounds} rounds, {args.steps} steps each\n")
            print("| setup | samples/s | ms/step | all-reduce ms/step | all-reduce share | speed-up |")
            print("| --- | ---: | ---: | ---: | ---: | ---: |")
            base = None
            for label, ranks, _ in setups:
                r = {k: statistics.median(x[k] for x in results[label]) for k in results[label][0]}
                base = base or r["samples_per_s"]
                share = r["allreduce_ms"] / r["step_ms"] if ranks > 1 else 0.0
                print(f"| {label} | {r['samples_per_s']:.1f} | {r['step_ms']:.1f} | "
                      f"{r['allreduce_ms']:.2f} | {100 * share:.1f}% | "
                      f"{r['samples_per_s'] / base:.2f}x |")


if __name__ == "__main__":
    main()
