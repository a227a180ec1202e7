#!/usr/bin/env bash
# Character-level GPT on tinyshakespeare, in stages (wenet style):
#   0 prepare-data   split the text, build the char tokenizer, encode the splits
#   1 train          train the GPT (resumes if interrupted: rerun with --stage 1)
#   2 eval           loss and perplexity on the whole valid and test splits
#   3 generate       a sample from the best checkpoint
#   4 compare        (only when asked: --stage 4 --stop_stage 4) GPT-2, the LSTM LM, NNLM and
#                    Transformer-XL with and without memory at matched parameter counts, the same
#                    split, steps and tokens a step; evaluated on valid and test, one table
# Usage: ./run.sh [--stage N] [--stop_stage M] [--conf conf/train.yaml] [--exp DIR] [--backend flex]
#                 [--compare_steps 1000]
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)

stage=0
stop_stage=3
conf=conf/train.yaml
exp=exp/shakespeare_char
backend=            # empty: the recipe's backend (flex); or ndarray, wgpu, tch, cuda
compare_steps=1000  # stage 4: training steps of every model (the cosine decay ends there)
parse_options_vars="stage stop_stage conf exp backend compare_steps"
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

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  echo "stage 4: compare the language models"
  # name, recipe, overrides; every recipe shares train.yaml's prepared data and split.
  runs=(
    "gpt2 conf/train.yaml"
    "rnn_lm conf/rnn_lm.yaml"
    "nnlm conf/nnlm.yaml"
    "transformer_xl conf/transformer_xl.yaml"
    "transformer_xl_mem0 conf/transformer_xl.yaml --set model.mem_len=0"
  )
  "$nlpkit" prepare-data conf/train.yaml
  dirs=()
  for run in "${runs[@]}"; do
    read -r name recipe extra <<<"$run"
    dir=exp/compare/$name
    dirs+=("$dir")
    set_backend=()
    [ -n "$backend" ] && set_backend=(--set "backend.type=$backend")
    # shellcheck disable=SC2086 # $extra is a list of --set options
    "$nlpkit" train "$recipe" --set "output_dir=$dir" --set "train.max_steps=$compare_steps" \
      "${set_backend[@]}" $extra --resume
    for split in valid test; do
      "$nlpkit" eval "$dir" --split "$split"
    done
  done
  local/compare_table.sh "${dirs[@]}" | tee exp/compare/table.md
fi
