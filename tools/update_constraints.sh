#!/usr/bin/env bash
# Regenerates constraints.txt: the exact versions that CI, the README's install command and the
# figures in the docs use. It installs today's releases within pyproject.toml's ranges into a
# throw-away venv and freezes them. Run it from the repository root, then run `bash .ci/run` and
# re-measure the figures a changed pin can move (docs/results.md says which).
#
#   bash tools/update_constraints.sh            # rewrite constraints.txt
#
# To see whether today's releases still pass without touching the pins (the "latest releases" run):
#   EG_GRPO_LATEST=1 bash .ci/run
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# torch: the CPU build (an unpinned torch pulls a multi-GB CUDA build); the package accepts torch>=2.4.
"$venv/bin/python" -m pip install -q torch==2.13.0
"$venv/bin/python" -m pip install -q -e ".[dev]"
{
  echo "# The versions CI and the documented figures use; regenerate with: bash tools/update_constraints.sh"
  echo "# (the package itself accepts the ranges in pyproject.toml; see the README's Tests section)"
  "$venv/bin/python" -m pip freeze --exclude-editable | grep -v -i '^eg[-_]grpo' | sed -E 's/^(torch==[^+]+)\+cpu$/\1/'
} > constraints.txt
rm -rf "$(dirname "$venv")"
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) pins)"
