#!/usr/bin/env bash
# Chinese character embeddings on the MSRA NER corpus's text (55,289 sentences, 2.3M
# characters; the tags dropped), in stages:
#   0 text          join each sentence's characters into one line: data/msra_text.txt
#   1 prepare-data  characters as tokens, a seeded 90/5/5 split by chunks of sentences, the
#                   vocabulary of characters seen at least 5 times, GloVe's co-occurrences
#   2 skip-gram     word2vec skip-gram with negative sampling (conf/skipgram.yaml)
#   3 cbow          word2vec CBOW (conf/cbow.yaml)
#   4 glove         GloVe (conf/glove.yaml)
#   5 eval          nearest neighbours of a few characters (queries.txt) and the small
#                   hand-made analogy and similarity files, per model; exp/*/vectors.txt
# Usage: ./run.sh [--stage N] [--stop_stage M] [--backend flex] [--data PATH]
# --data: another copy of dh_msra.txt (`char<TAB>tag` lines, a blank line between sentences).
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)

stage=0
stop_stage=5
backend=            # empty: the recipes' backend (flex); or ndarray, wgpu, tch, cuda
data=../../data/msra_ner/dh_msra.txt
parse_options_vars="stage stop_stage backend data"
. "$root/tools/parse_options.sh"

. "$root/tools/nlpkit.sh"
overrides=()
[ -n "$backend" ] && overrides+=(--set "backend.type=$backend")

train() {  # conf: resumes an interrupted run
  "$nlpkit" train "$1" "${overrides[@]}" --resume
}

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  echo "stage 0: one line of characters per sentence of $data"
  mkdir -p data
  # First column of each line; a blank line ends a sentence.
  awk -F'\t' 'NF == 0 { if (s != "") print s; s = ""; next } { s = s $1 }
              END { if (s != "") print s }' "$data" > data/msra_text.txt
  wc -lm data/msra_text.txt
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  echo "stage 1: prepare data"
  for conf in skipgram cbow glove; do
    "$nlpkit" prepare-data conf/$conf.yaml "${overrides[@]}"
  done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  echo "stage 2: word2vec skip-gram"
  train conf/skipgram.yaml
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  echo "stage 3: word2vec CBOW"
  train conf/cbow.yaml
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  echo "stage 4: GloVe"
  train conf/glove.yaml
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  echo "stage 5: nearest neighbours, analogies, similarity"
  for exp in exp/skipgram exp/cbow exp/glove; do
    echo "== $exp"
    "$nlpkit" eval "$exp" --queries queries.txt --neighbours 8 \
      --analogies analogies.txt --similarity similarity.txt
  done
  "$nlpkit" summary exp/skipgram exp/cbow exp/glove | tee exp/scores.txt
fi
