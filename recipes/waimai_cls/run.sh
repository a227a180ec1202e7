#!/usr/bin/env bash
# Sentiment classification of waimai_10k food-delivery reviews (positive/negative), in stages:
#   0 prepare-data   read the CSV, deal the rows to train/valid/test (80/10/10, seeded), build
#                    the character vocabularies
#   1 train          TextCNN (conf/textcnn.yaml)
#   2 pretrain       a small BERT on the reviews' own text: masked LM + NSP, uncertainty-weighted
#   3 fine-tune      BERT sequence classification from stage 2 (conf/bert_finetune.yaml)
#   4 baseline       the same BERT classifier from scratch (conf/bert_scratch.yaml)
#   5 eval           accuracy, macro-F1 and confusion matrices on the test split; summary table
#   6 pretrained     fine-tune a pretrained HF BERT folder given as --pretrained DIR (e.g.
#                    bert-base-chinese, see README.md) and evaluate it; skipped without one
# Usage: ./run.sh [--stage N] [--stop_stage M] [--backend flex] [--data PATH] [--pretrained DIR]
# --data: another copy of waimai_10k.csv (CSV with header `label,review`).
set -euo pipefail
caller_dir=$PWD
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)

stage=0
stop_stage=6
backend=            # empty: the recipes' backend (flex); or ndarray, wgpu, tch, cuda
data=               # empty: ../../data/waimai_10k/waimai_10k.csv, as the recipes say
pretrained=         # an HF model folder (config.json, model.safetensors, tokenizer) for stage 6
parse_options_vars="stage stop_stage backend data pretrained"
. "$root/tools/parse_options.sh"
# A relative --pretrained is the caller's, not this folder's.
[ -n "$pretrained" ] && pretrained=$(cd "$caller_dir" && cd "$pretrained" && pwd)

. "$root/tools/nlpkit.sh"
overrides=()
[ -n "$backend" ] && overrides+=(--set "backend.type=$backend")
[ -n "$data" ] && overrides+=(--set "data.train=$data")

train() {  # conf: resumes an interrupted run
  "$nlpkit" train "$1" "${overrides[@]}" --resume
}

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  echo "stage 0: prepare data"
  "$nlpkit" prepare-data conf/textcnn.yaml "${overrides[@]}"
  "$nlpkit" prepare-data conf/bert_pretrain.yaml "${overrides[@]}"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  echo "stage 1: train TextCNN"
  train conf/textcnn.yaml
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  echo "stage 2: pretrain BERT (masked LM + NSP)"
  train conf/bert_pretrain.yaml
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  echo "stage 3: fine-tune BERT for classification"
  train conf/bert_finetune.yaml
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  echo "stage 4: the same BERT classifier from scratch (baseline)"
  train conf/bert_scratch.yaml
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  echo "stage 5: evaluate on the test split"
  "$nlpkit" eval exp/bert_pretrain --split test
  for exp in exp/textcnn exp/bert_finetune exp/bert_scratch; do
    echo "== $exp"
    "$nlpkit" eval "$exp" --split test
  done
  "$nlpkit" summary exp/textcnn exp/bert_scratch exp/bert_finetune |
    tee exp/test_scores.txt
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  if [ -z "$pretrained" ]; then
    echo "stage 6: skipped (no --pretrained DIR; see README.md for getting bert-base-chinese)"
  else
    echo "stage 6: fine-tune the pretrained HF model $pretrained"
    "$nlpkit" train conf/bert_pretrained.yaml "${overrides[@]}" --set "init_from=$pretrained" --resume
    "$nlpkit" eval exp/bert_pretrained --split test
  fi
fi
