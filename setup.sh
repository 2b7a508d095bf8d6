#!/usr/bin/env bash
# Stage what benchmark jobs need under STAGE_PATH: the container (or a venv), the code and conf at
# this version, the tokenizer, and stage.json. A second run reuses what is staged.
#   STAGE_PATH=/lustre/$USER/recipes HF_TOKEN=<token> ./setup.sh
#   STAGE_PATH=... CONTAINER=none TORCH_SPEC=torch==2.13.0 ./setup.sh      # a venv, no container
# Knobs (README, "setup.sh"): STAGE_PATH (required), CONTAINER=enroot|none, CONTAINER_IMAGE,
# SLURM_PARTITION, SLURM_ACCOUNT, SLURM_GPUS_PER_NODE, HF_TOKEN, TOKENIZER_REPO, TORCH_SPEC,
# TORCH_INDEX_URL, VENV_SYSTEM_SITE_PACKAGES, PYTHON. The work is src/recipes/stage.py.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! command -v "${PYTHON:-python3}" >/dev/null; then
  echo "setup.sh: PYTHON='${PYTHON:-python3}' is not a command found on PATH; set PYTHON to a Python 3 interpreter (e.g. PYTHON=/usr/bin/python3)" >&2
  exit 2
fi
PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" -m recipes.stage "$@"
