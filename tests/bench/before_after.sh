#!/bin/sh
# Before/after of a change, measured back to back in one run on this machine:
#   tests/bench/before_after.sh REV [run.py options...]
# checks REV out into a temporary worktree, runs its tests/bench/run.py with the code of
# REV (PYTHONPATH puts it ahead of the editable install), then this tree's run.py, and
# prints both tables. JSON: $TMPDIR/connet-bench-before.json and -after.json.
set -eu
rev=$1; shift
here=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-python}
tmp=${TMPDIR:-/tmp}
tree=$(mktemp -d "$tmp/connet-before.XXXXXX")
trap 'git -C "$here" worktree remove --force "$tree" >/dev/null 2>&1 || rm -rf "$tree"' EXIT INT TERM
git -C "$here" worktree add --detach --force "$tree" "$rev" >/dev/null
echo "== before: $(git -C "$tree" log --oneline -1)"
PYTHONPATH="$tree:$tree/plugins:$tree/tui" "$python" "$tree/tests/bench/run.py" --json "$tmp/connet-bench-before.json" "$@"
echo "== after: $(git -C "$here" log --oneline -1) $(git -C "$here" diff --quiet || echo '(+ uncommitted changes)')"
"$python" "$here/tests/bench/run.py" --json "$tmp/connet-bench-after.json" "$@"
