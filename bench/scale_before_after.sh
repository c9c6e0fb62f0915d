#!/usr/bin/env bash
# Live-sandbox scale bench, before vs after, one command:
#   bench/scale_before_after.sh [BEFORE_COMMIT] [OUT_DIR]
# Runs THIS checkout's bench/scale.py (live mode) against the code of BEFORE_COMMIT (a detached
# worktree in a temp dir, removed afterwards) and against this checkout, alternating the two so a
# drifting machine load hits both, REPS times; then prints a markdown table of every run.
# Env: REPS (2), LEVELS ("64 128"), ROUNDS (30), THINK (0.2), PYTHON (python).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
before=${1:-210400e}
out=${2:-$root/bench/results/scale-live}
reps=${REPS:-2}
levels=${LEVELS:-64 128}
python=${PYTHON:-python}
mkdir -p "$out"
tmp=$(mktemp -d)
cleanup() { git -C "$root" worktree remove --force "$tmp/before" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
git -C "$root" worktree add --quiet --detach "$tmp/before" "$before"
# the same bench file measures both: the old checkout's own bench/ lacks the live mode
mkdir -p "$tmp/benchroot" && cp -r "$root/bench" "$tmp/benchroot/bench"
labels=()
for rep in $(seq 1 "$reps"); do
  for side in before after; do
    code=$root; [ "$side" = before ] && code=$tmp/before
    echo "== $side rep $rep ($(git -C "$code" rev-parse --short HEAD)): $(uptime)"
    # shellcheck disable=SC2086  # LEVELS is a list of numbers
    (cd "$tmp" && PYTHONPATH="$tmp/benchroot:$code" "$python" -m bench.scale \
      --sandboxes $levels --rounds "${ROUNDS:-30}" --think "${THINK:-0.2}" \
      --json "$out/$side-$rep.json" | sed -n '/^code=/,$p')
    labels+=("$side-$rep=$out/$side-$rep.json")
  done
done
PYTHONPATH="$tmp/benchroot:$root" "$python" -m bench.scale --table "${labels[@]}"
