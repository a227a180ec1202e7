#!/usr/bin/env bash
# Seed corpora for the fuzz targets, made from the repository's own files (nothing large is
# committed): every recipe under recipes/*/conf/, and the first lines of each data set split
# into small files. Run from anywhere; writes fuzz/corpus/<target>/.
set -euo pipefail
fuzz=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$fuzz")
corpus=$fuzz/corpus

mkdir -p "$corpus/recipe"
for f in "$root"/recipes/*/conf/*.yaml; do
    recipe=$(basename "$(dirname "$(dirname "$f")")")
    cp "$f" "$corpus/recipe/$recipe-$(basename "$f")"
done

# seed TARGET FILE LINES PER_FILE: the lines of FILE that `sed -n LINES` prints, PER_FILE lines
# a seed.
seed() {
    local target=$1 file=$2 lines=$3 per=$4
    mkdir -p "$corpus/$target"
    sed -n "$lines" "$root/$file" | split -l "$per" -d -a 3 - "$corpus/$target/seed-"
}
# waimai_10k.csv lists the positive reviews first: 200 lines from the top, 100 from the end.
# The header row is the first line; each later seed gets it again so that it parses.
seed csv data/waimai_10k/waimai_10k.csv '1,200p;11889,11988p' 20
header=$(head -n 1 "$root/data/waimai_10k/waimai_10k.csv")
for f in "$corpus"/csv/seed-*; do
    if [ "$(head -n 1 "$f")" != "$header" ]; then
        { printf '%s\n' "$header"; cat "$f"; } > "$f.tmp" && mv "$f.tmp" "$f"
    fi
done
# dh_msra.txt has a blank line between sentences; 300 lines are a few dozen sentences.
seed tagging data/msra_ner/dh_msra.txt 1,300p 30
seed parallel data/cmn-eng/cmn.txt 1,300p 20

for t in recipe csv tagging parallel; do
    echo "$t: $(ls "$corpus/$t" | wc -l) seeds in $corpus/$t"
done
