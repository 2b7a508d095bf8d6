#!/usr/bin/env bash
# Stage what a benchmark job needs under STAGE_PATH: a venv with this package installed.
# STAGE_PATH=/shared/fs/recipes ./setup.sh
set -euo pipefail

die() { echo "setup.sh: $*" >&2; exit 2; }
[ -n "${STAGE_PATH:-}" ] || die "STAGE_PATH is required: a folder on a file system every node sees (e.g. STAGE_PATH=/lustre/\$USER/recipes)"

here="$(cd "$(dirname "$0")" && pwd)"
venv="$STAGE_PATH/venv"
mkdir -p "$STAGE_PATH"
# The marker is written last: an interrupted install leaves no marker and is redone from scratch.
if [ -f "$venv/.staged" ]; then
  echo "setup.sh: venv already staged at $venv; reusing it"
else
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "${TORCH_SPEC:-torch}"  # e.g. TORCH_SPEC=torch==2.13.0 for CPU
  "$venv/bin/pip" install -q "$here"
  touch "$venv/.staged"
  echo "setup.sh: staged venv at $venv"
fi
