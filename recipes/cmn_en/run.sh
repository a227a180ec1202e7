#!/usr/bin/env bash
# English->Chinese translation on Tatoeba's cmn-eng pairs, in stages (wenet style):
#   0 prepare-data   read the pairs, split them (seeded), train the BPE (en) and char (zh)
#                    tokenizers, encode and length-filter
#   1 train RNN      GRU encoder-decoder with additive attention (conf/rnn.yaml)
#   2 train          Transformer (conf/transformer.yaml)
#   3 average        the best 5 Transformer checkpoints by validation loss
#   4 eval           BLEU/chrF on the test split, greedy and beam 5, for both models (and the
#                    average), plus sample translations
# Usage: ./run.sh [--stage N] [--stop_stage M] [--direction en-zh|zh-en] [--backend flex] [--data PATH]
# --direction zh-en: Chinese->English (Chinese characters in, English BPE out; own folders).
# --data: another copy of cmn.txt (e.g. a newer download from manythings.org/anki).
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)

stage=0
stop_stage=4
backend=            # empty: the recipes' backend (flex); or ndarray, wgpu, tch, cuda
data=               # empty: ../../data/cmn-eng/cmn.txt, as the recipes say
direction=en-zh
parse_options_vars="stage stop_stage backend data direction"
. "$root/tools/parse_options.sh"

. "$root/tools/nlpkit.sh"
overrides=()
[ -n "$backend" ] && overrides+=(--set "backend.type=$backend")
[ -n "$data" ] && overrides+=(--set "data.train=$data")
suffix=
case $direction in
  en-zh) ;;
  zh-en)
    suffix=_zh_en
    overrides+=(--set data.parallel.source_lang=zh --set data.parallel.target_lang=en
      --set data.tokenizer.type=char --set data.target_tokenizer.type=bpe
      --set data.target_tokenizer.vocab_size=4000 --set data.prepared_dir=data/zh_en) ;;
  *) echo "--direction must be en-zh or zh-en" >&2; exit 2 ;;
esac
rnn=exp/rnn$suffix
transformer=exp/transformer$suffix

train() {  # conf, experiment folder: resumes an interrupted run
  "$nlpkit" train "$1" "${overrides[@]}" --set "output_dir=$2" --resume
}

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  echo "stage 0: prepare data"
  "$nlpkit" prepare-data conf/transformer.yaml "${overrides[@]}" --set "output_dir=$transformer"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  echo "stage 1: train the RNN + attention model"
  train conf/rnn.yaml "$rnn"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  echo "stage 2: train the Transformer"
  train conf/transformer.yaml "$transformer"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  echo "stage 3: average the best 5 Transformer checkpoints"
  "$nlpkit" average "$transformer" --best 5 -o "$transformer/average_best5"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  echo "stage 4: BLEU and chrF on the test split"
  for beam in 1 5; do
    "$nlpkit" eval "$rnn" --split test --beam "$beam" > /dev/null
    "$nlpkit" eval "$transformer" --split test --beam "$beam" > /dev/null
    "$nlpkit" eval "$transformer" --split test --beam "$beam" \
      --checkpoint "$transformer/average_best5" > /dev/null
  done
  "$nlpkit" summary "$rnn" "$transformer" | tee "$transformer/test_scores.txt"
  echo "sample translations (transformer, best checkpoint, beam 5):"
  if [ "$direction" = en-zh ]; then
    samples=("Tom is reading a book." "I don't want to go to school tomorrow."
      "Where is the station?" "She has lived in Paris for ten years.")
  else
    samples=("汤姆在看书。" "我明天不想去上学。" "车站在哪里？" "她在巴黎住了十年了。")
  fi
  printf '%s\n' "${samples[@]}" |
    "$nlpkit" translate "$transformer" --beam 5 |
    tee "$transformer/sample_translations.txt"
fi
