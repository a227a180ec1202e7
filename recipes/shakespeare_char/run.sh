#!/usr/bin/env bash
# Character-level GPT on tinyshakespeare, in stages (wenet style):
#   0 prepare-data   split the text, build the char tokenizer, encode the splits
#   1 train          train the GPT (resumes if interrupted: rerun with --stage 1)
#   2 eval           loss and perplexity on the whole valid and test splits
#   3 generate       a sample from the best checkpoint
# Usage: ./run.sh [--stage N] [--stop_stage M] [--conf conf/train.yaml] [--exp DIR] [--backend flex]
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)

stage=0
stop_stage=3
conf=conf/train.yaml
exp=exp/shakespeare_char
backend=            # empty: the recipe's backend (flex); or ndarray, wgpu, tch, cuda
parse_options_vars="stage stop_stage conf exp backend"
. "$root/tools/parse_options.sh"

. "$root/tools/nlpkit.sh"
overrides=(--set "output_dir=$exp")
[ -n "$backend" ] && overrides+=(--set "backend.type=$backend")

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  echo "stage 0: prepare data"
  "$nlpkit" prepare-data "$conf" "${overrides[@]}"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  echo "stage 1: train"
  "$nlpkit" train "$conf" "${overrides[@]}" --resume
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  echo "stage 2: evaluate"
  for split in valid test; do
    "$nlpkit" eval "$exp" --split "$split"
  done
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  echo "stage 3: generate"
  "$nlpkit" generate "$exp" --prompt "ROMEO:" --max-new-tokens 500 --seed 1337 | tee "$exp/sample.txt"
fi
