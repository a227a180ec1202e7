#!/usr/bin/env bash
# GPT-2 small's training step (124M parameters, batch 8 x 1024 tokens) on a GPU: nlpkit on the
# cuda and wgpu backends against PyTorch CUDA eager and torch.compile, printing ms/step,
# tokens/s and MFU against the chip's dense fp32 and tf32 peaks (bench/gpu.py). Two short
# runs, as a lent GPU machine's minutes ask:
#
#   bench/gpu.sh build     # -> bench/gpu-bin/nlpkit-gpu (cargo, the crates; no CUDA toolkit)
#   bench/gpu.sh measure   # on the GPU machine: python3 with torch (CUDA), the binary above
#
# cubecl loads the CUDA driver and NVRTC at run time, so `build` can run on any x86-64 machine
# with the crates and the binary travel to the GPU machine. wgpu needs a Vulkan loader there
# (see the device notes); a backend that fails gets a row saying so, the others still run.
# BATCH, BLOCK, STEPS, BACKENDS ("cuda wgpu"), TORCH_DEVICE (cuda) and PEAK_FP32/PEAK_TF32
# (TFLOP/s, for a chip bench/gpu.py does not know) override the defaults.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
case "${1:-}" in
  build)
    cargo build --release --features cuda,wgpu --bin nlpkit
    mkdir -p bench/gpu-bin
    cp target/release/nlpkit bench/gpu-bin/nlpkit-gpu
    # Put the default binary back for the recipes and tests.
    cargo build --release --bin nlpkit
    echo "built bench/gpu-bin/nlpkit-gpu"
    ;;
  measure)
    exec python3 bench/gpu.py --binary "${BINARY:-bench/gpu-bin/nlpkit-gpu}" \
      --batch "${BATCH:-8}" --block "${BLOCK:-1024}" --steps "${STEPS:-30}" \
      --backends ${BACKENDS:-cuda wgpu} --torch-device "${TORCH_DEVICE:-cuda}"
    ;;
  *)
    echo "usage: bench/gpu.sh build|measure" >&2
    exit 2
    ;;
esac
