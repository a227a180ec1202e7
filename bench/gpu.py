#!/usr/bin/env python3
"""GPT-2 small's training step on a GPU, nlpkit against PyTorch: the measuring half of
bench/gpu.sh (read its header). Prints one Markdown table.

MFU counts nanoGPT's estimate of training FLOPs per token, 6N + 12·L·d·T (N the parameters less
the position table, L layers, d the width, T the block), against the chip's dense peak for fp32
(CUDA cores) and tf32 (tensor cores). nlpkit's steps are timed by `nlpkit train` itself
(metrics.jsonl, the first log window dropped), PyTorch's by bench/torch_gpt.py.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from recipe_run import ROOT, train_windows

# Dense peaks in TFLOP/s, (fp32, tf32), from NVIDIA's data sheets (the SXM parts).
PEAKS = {"H200": (67.0, 494.7), "H100": (67.0, 494.7), "A100": (19.5, 156.0),
         "L40S": (91.6, 183.0), "A10": (31.2, 62.5)}
LAYERS, HEADS, WIDTH, VOCAB = 12, 12, 768, 50304


def gpu_name():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, check=True).stdout
        return out.strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown GPU"


def peaks(name):
    if os.environ.get("PEAK_FP32") and os.environ.get("PEAK_TF32"):
        return float(os.environ["PEAK_FP32"]), float(os.environ["PEAK_TF32"])
    return next((p for key, p in PEAKS.items() if key in name), (None, None))


def flops_per_token(block):
    d = WIDTH
    per_layer = 12 * d * d + 13 * d  # attention and MLP weights and biases, two LayerNorms
    params = VOCAB * d + LAYERS * per_layer + 2 * d  # tied head; the position table left out
    return 6 * params + 12 * LAYERS * d * block


def nlpkit_ms(binary, backend, args, workdir):
    overrides = ["--set", f"backend.type={backend}", "--set", "model.preset=gpt2-small",
                 "--set", f"model.vocab_size={VOCAB}", "--set", f"model.block_size={args.block}",
                 "--set", f"train.batch_size={args.batch}"]
    windows = train_windows([], os.path.abspath(binary), args.steps, workdir, backend, overrides)
    tokens = args.batch * args.block
    return statistics.median(1000 * tokens / w["tokens_per_s"] for w in windows)


def torch_ms(args, compile_it, tf32):
    cmd = [sys.executable, os.path.join(ROOT, "bench/torch_gpt.py"), "--device",
           args.torch_device, "--batch", str(args.batch), "--block", str(args.block),
           "--layers", str(LAYERS), "--heads", str(HEADS), "--width", str(WIDTH),
           "--vocab", str(VOCAB), "--bias", "--steps", str(args.steps - 10)]
    cmd += ["--compile", "--warmup", "5"] if compile_it else []
    cmd += ["--tf32"] if tf32 else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["ms_per_step"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", required=True)
    p.add_argument("--backends", nargs="+", default=["cuda", "wgpu"])
    p.add_argument("--torch-device", default="cuda")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--block", type=int, default=1024)
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args()
    name = gpu_name()
    fp32, tf32 = peaks(name)
    tokens = args.batch * args.block
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for backend in args.backends:
            try:
                rows.append((f"nlpkit {backend}", nlpkit_ms(args.binary, backend, args, workdir)))
            except (OSError, subprocess.CalledProcessError, KeyError, ValueError) as e:
                rows.append((f"nlpkit {backend}", f"failed: {e}"))
        for label, compile_it, use_tf32 in [("PyTorch eager fp32", False, False),
                                            ("PyTorch eager tf32", False, True),
                                            ("PyTorch torch.compile tf32", True, True)]:
            try:
                rows.append((label, torch_ms(args, compile_it, use_tf32)))
            except (OSError, subprocess.CalledProcessError, ValueError) as e:
                rows.append((label, f"failed: {e}"))
    print(f"\n{name}; GPT-2 small (vocabulary {VOCAB}), batch {args.batch} x {args.block}, "
          f"{flops_per_token(args.block) / 1e6:.0f} MFLOP per token; peaks fp32 {fp32} / "
          f"tf32 {tf32} TFLOP/s\n")
    print("| run | ms/step | tokens/s | MFU vs fp32 peak | MFU vs tf32 peak |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, ms in rows:
        if isinstance(ms, str):
            print(f"| {label} | {ms} | | | |")
            continue
        rate = 1000 * tokens / ms
        achieved = flops_per_token(args.block) * rate / 1e12
        mfu = lambda peak: f"{100 * achieved / peak:.1f}%" if peak else "?"
        print(f"| {label} | {ms:.1f} | {rate:.0f} | {mfu(fp32)} | {mfu(tf32)} |")


if __name__ == "__main__":
    main()
