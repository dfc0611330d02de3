#!/usr/bin/env bash
# Build every (model, target) pair listed in a file, one per line: "<model> <target>".
# Usage: ci/build-matrix.sh models.txt   ->  build-results.jsonl (one --json result per line)
# A rebuild with the same inputs is a cache hit, so re-running after a failure only builds what is missing.
set -euo pipefail
list="${1:?usage: ci/build-matrix.sh models.txt}"
out="${2:-build-results.jsonl}"
: > "$out"
while read -r model target; do
  [[ -z "${model}" || "${model}" == \#* ]] && continue
  foundry-build "$model" --target "$target" --json >> "$out"
done < "$list"
foundry cache verify
