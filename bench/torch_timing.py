"""The timing loop and options shared by the PyTorch twins of nlpkit's benchmarked steps."""
import json
import statistics
import time

import torch


def report_step_time(model, step, warmup, steps):
    """Run `step()` (one training step, returning the loss) warmup + steps times and print the
    median milliseconds of the timed steps as the JSON line bench/compare_pytorch.py reads."""
    times = []
    for index in range(warmup + steps):
        start = time.perf_counter()
        step().item()
        if index >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    print(json.dumps({"backend": "pytorch", "ms_per_step": statistics.median(times),
                      "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "params": sum(q.numel() for q in model.parameters())}))


def add_compile_option(parser):
    parser.add_argument("--compile", action="store_true",
                        help="run the model through torch.compile (inductor) instead of eagerly")


def compiled(model, args):
    """`model` under torch.compile when `--compile` was given (the optimiser stays eager, as in
    nanoGPT's train.py); the warm-up steps absorb the compilation."""
    return torch.compile(model) if args.compile else model
