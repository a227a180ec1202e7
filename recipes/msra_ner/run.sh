#!/usr/bin/env bash
# Chinese named-entity recognition (MSRA, BIO tags LOC/ORG/PER, one character per token), in
# stages:
#   0 prepare-data   read the tagged sentences, deal them to train/valid/test (90/5/5, seeded)
#   1 pretrain       a small BERT on the training sentences' text: masked LM, dynamic masking
#   2 fine-tune      BERT + softmax per token (conf/bert_softmax.yaml)
#   3 fine-tune      BERT + linear-chain CRF (conf/bert_crf.yaml)
#   4 eval           entity-level precision/recall/F1 (conlleval/seqeval) on the test split
#   5 pretrained     BERT + CRF fine-tuned from a pretrained HF BERT folder given as
#                    --pretrained DIR (e.g. bert-base-chinese, see README.md), evaluated;
#                    skipped without one
# Usage: ./run.sh [--stage N] [--stop_stage M] [--backend flex] [--data PATH] [--pretrained DIR]
# --data: another copy of dh_msra.txt (`char<TAB>tag` lines, a blank line between sentences).
set -euo pipefail
caller_dir=$PWD
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)

stage=0
stop_stage=5
backend=            # empty: the recipes' backend (flex); or ndarray, wgpu, tch, cuda
data=               # empty: ../../data/msra_ner/dh_msra.txt, as the recipes say
pretrained=         # an HF model folder (config.json, model.safetensors, tokenizer) for stage 5
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
  "$nlpkit" prepare-data conf/bert_pretrain.yaml "${overrides[@]}"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  echo "stage 1: pretrain BERT (masked LM)"
  train conf/bert_pretrain.yaml
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  echo "stage 2: fine-tune BERT + softmax"
  train conf/bert_softmax.yaml
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  echo "stage 3: fine-tune BERT + CRF"
  train conf/bert_crf.yaml
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  echo "stage 4: evaluate on the test split"
  "$nlpkit" eval exp/bert_pretrain --split test
  for exp in exp/bert_softmax exp/bert_crf; do
    echo "== $exp"
    "$nlpkit" eval "$exp" --split test
  done
  "$nlpkit" summary exp/bert_softmax exp/bert_crf | tee exp/test_scores.txt
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  if [ -z "$pretrained" ]; then
    echo "stage 5: skipped (no --pretrained DIR; see README.md for getting bert-base-chinese)"
  else
    echo "stage 5: fine-tune the pretrained HF model $pretrained"
    "$nlpkit" train conf/bert_crf_pretrained.yaml "${overrides[@]}" --set "init_from=$pretrained" --resume
    "$nlpkit" eval exp/bert_crf_pretrained --split test
  fi
fi
