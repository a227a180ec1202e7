"""The timing loop shared by the PyTorch twins of nlpkit's benchmarked steps."""
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
