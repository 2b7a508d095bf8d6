#!/usr/bin/env bash
#SBATCH --job-name=recipes-llama31
#SBATCH --exclusive
#SBATCH --time=01:00:00
#SBATCH --output=slurm-%x-%j.out
# Llama 3.1 pretraining benchmark (seed 003): DTYPE=bf16|fp8 MODEL_SIZE=8b|70b|405b|debug
#   sbatch -N 72 launch.sh                  one rank per GPU through srun, in what setup.sh staged
#   NGPU=4 bash launch.sh                   outside Slurm: 4 local ranks (torchrun)
#   DRY_RUN=1 NGPU=576 bash launch.sh       validate and plan only, no GPU
#   ... launch.sh -- trainer.max_steps=10   further Hydra overrides after --
# Knobs (README, "launch.sh"): STAGE_PATH, GSW_VERSION, NGPU, GPUS_PER_NODE, COMM_BACKEND, LOG_RANK,
# DRY_RUN, BACKEND, GPU_TYPE, CONTAINER_MOUNTS. The logic is src/recipes/launch.py.
set -euo pipefail

# Under sbatch this file runs from Slurm's spool: the code is the one setup.sh staged.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
code="$here" py=python3
if [ -n "${STAGE_PATH:-}" ] && [ -f "$STAGE_PATH/stage.json" ]; then
  code="$STAGE_PATH/code"
  [ -x "$STAGE_PATH/venv/bin/python" ] && py="$STAGE_PATH/venv/bin/python"
fi
PYTHONPATH="$code/src${PYTHONPATH:+:$PYTHONPATH}" exec "${RECIPES_PYTHON:-$py}" -m recipes.launch "$@"
