#!/usr/bin/env bash
# Build nlpkit with the tch (LibTorch) backend against PyTorch 2.9.0 from pip (no download at
# build time), then train the tiny test model on it as a check.
#
#   tools/build_tch.sh            # -> target/release/nlpkit-tch, examples/model_step-tch
#
# The venv (.venv-torch, 6.8 GB with PyTorch's CUDA libraries; it runs on CPU too) is created
# if missing. The binary finds libtorch at run time through an rpath to the venv's torch/lib.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=${VENV:-$root/.venv-torch}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install torch==2.9.0
fi
# build.rs embeds an rpath to the venv's torch/lib, so no LD_LIBRARY_PATH is needed later.
export PATH="$venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1
# Same target folder as the default build: Cargo keeps both feature sets' artifacts side by side.
cargo build --release --features tch --bin nlpkit --example model_step
cp target/release/nlpkit target/release/nlpkit-tch
cp target/release/examples/model_step target/release/examples/model_step-tch
# Put the default binary back for the recipes and tests.
env -u LIBTORCH_USE_PYTORCH cargo build --release

# Check: the tiny test model trains on tch with falling loss.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -c 60000 data/tinyshakespeare/input.txt > "$work/input.txt"
cat > "$work/recipe.yaml" <<YAML
backend: {type: tch}
seed: 7
output_dir: exp
data: {train: input.txt, prepared_dir: prepared, tokenizer: {type: char}}
model: {type: gpt2, n_layer: 1, n_head: 2, n_embd: 32, block_size: 16, dropout: 0.0}
optim: {type: adamw, lr: 1.0e-2, weight_decay: 0.0}
train: {max_steps: 40, batch_size: 8, log_interval: 10, eval_interval: 20, save_interval: 20}
YAML
(cd "$work" && "$root/target/release/nlpkit-tch" train recipe.yaml)
echo "tch backend OK: target/release/nlpkit-tch"
