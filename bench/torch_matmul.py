"""PyTorch's matmul throughput on the shapes and forms of examples/matmul_bench.rs (median
GFLOP/s of 20 calls, 2 threads unless --threads): the anchor for flex's figures."""
import argparse
import statistics
import time

import torch

SHAPES = [(1024, 768, 3072), (1024, 3072, 768), (1024, 768, 768), (2048, 256, 1024),
          (2048, 256, 3000), (768, 128, 512), (2048, 256, 768), (2048, 256, 256),
          (2048, 1024, 256)]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print("| m x k x n | x·W GFLOP/s | dY·Wᵀ GFLOP/s | xᵀ·dY GFLOP/s |")
    print("| --- | ---: | ---: | ---: |")
    for m, k, n in SHAPES:
        x, w, dy = torch.randn(m, k), torch.randn(k, n), torch.randn(m, n)
        forms = [lambda: x @ w, lambda: dy @ w.t(), lambda: x.t() @ dy]
        rates = []
        for form in forms:
            times = []
            for _ in range(22):
                t = time.perf_counter()
                form()
                times.append(time.perf_counter() - t)
            rates.append(f"{2 * m * k * n / statistics.median(times[2:]) / 1e9:.1f}")
        print(f"| {m} x {k} x {n} | " + " | ".join(rates) + " |")


if __name__ == "__main__":
    main()
