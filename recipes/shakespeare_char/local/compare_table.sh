#!/usr/bin/env bash
# One Markdown table from experiment folders (run.sh stage 4): the model (the folder's name), its
# parameters and valid/test perplexity from the newest `nlpkit eval` report of each split, and
# the training throughput from metrics.jsonl's training log lines: each holds `tokens_per_s`
# over the same number of steps (`log_interval`), so their harmonic mean is the tokens trained
# over the time taken (validation and checkpoints included; the arithmetic mean would favour
# the fast windows).
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
                 rate = substr($0, RSTART + 15, RLENGTH - 15)
                 if (rate > 0) { inverse += 1 / rate; n++ } }
               END { if (n) printf "%.0f", n / inverse; else printf "?" }' "$dir/metrics.jsonl")
  printf '| %s | %s | %.2f | %.2f | %s |\n' "$(basename "$dir")" \
    "$(echo "${params:-?}" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')" \
    "$(field "$valid" perplexity)" "$(field "$test" perplexity)" \
    "$(echo "$speed" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')"
done
