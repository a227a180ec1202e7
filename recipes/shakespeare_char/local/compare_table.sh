#!/usr/bin/env bash
# One Markdown table from experiment folders (run.sh stage 4): the model (the folder's name), its
# parameters and valid/test perplexity from the newest `nlpkit eval` report of each split, and
# the training throughput: the mean of metrics.jsonl's `tokens_per_s` over the training log
# lines, as `nlpkit summary` averages it.
# Usage: local/compare_table.sh EXP_DIR...
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 EXP_DIR..." >&2; exit 2; }

# A number field of a pretty-printed eval report: `  "key": value,`.
field() {
  sed -n "s/^ *\"$2\": *\([-0-9.eE+]*\),\{0,1\}$/\1/p" "$1" | head -n 1
}

# The newest report of a split, or a clear error.
report() {
  local newest
  newest=$(ls -t "$1"/eval_"$2"_*.json 2>/dev/null | head -n 1)
  if [ -z "$newest" ]; then
    echo "$0: no eval_$2_*.json in $1; run \`nlpkit eval $1 --split $2\`" >&2
    exit 1
  fi
  echo "$newest"
}

echo "| model | parameters | valid ppl | test ppl | training tokens/s |"
echo "| --- | ---: | ---: | ---: | ---: |"
for dir in "$@"; do
  valid=$(report "$dir" valid)
  test=$(report "$dir" test)
  params=$(field "$valid" parameters)
  speed=$(awk '/"split":"train"/ && match($0, /"tokens_per_s":[-0-9.eE+]+/) {
                 sum += substr($0, RSTART + 15, RLENGTH - 15); n++ }
               END { if (n) printf "%.0f", sum / n; else printf "?" }' "$dir/metrics.jsonl")
  printf '| %s | %s | %.2f | %.2f | %s |\n' "$(basename "$dir")" \
    "$(echo "${params:-?}" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')" \
    "$(field "$valid" perplexity)" "$(field "$test" perplexity)" \
    "$(echo "$speed" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')"
done
