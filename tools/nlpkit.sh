#!/usr/bin/env bash
# Sourced by every recipe's run.sh, after parse_options.sh: sets $nlpkit to the binary
# ($NLPKIT, or the repository's release build, built when missing).
#
# Training stages call `"$nlpkit" train CONF --resume`: it continues an interrupted run from its
# latest checkpoint and starts a new one when there is none, so rerunning a stage is safe.

root=${root:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
nlpkit=${NLPKIT:-$root/target/release/nlpkit}
if [ ! -x "$nlpkit" ]; then
  echo "building nlpkit (release)..."
  (cd "$root" && cargo build --release)
fi
