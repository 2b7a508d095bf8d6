#!/usr/bin/env bash
#SBATCH --job-name=recipes-llama31
#SBATCH --exclusive
#SBATCH --time=01:00:00
# Llama 3.1 pretraining benchmark: DTYPE=bf16|fp8 MODEL_SIZE=8b|70b|405b|debug bash launch.sh [overrides]
# Reads the environment, checks it, and hands over to recipes-train; extra arguments are Hydra
# overrides. This version runs on one machine; Slurm multi-node launch comes with setup.sh staging.
set -euo pipefail

die() { echo "launch.sh: $*" >&2; exit 2; }

case "${DTYPE:-}" in
  bf16|fp8) ;;
  *) die "DTYPE='${DTYPE:-}' is required and must be one of: bf16 fp8 (e.g. DTYPE=bf16)" ;;
esac
case "${MODEL_SIZE:-}" in
  8b|70b|405b|debug) ;;
  *) die "MODEL_SIZE='${MODEL_SIZE:-}' is required and must be one of: 8b 70b 405b debug" ;;
esac
[ "${1:-}" = "--" ] && shift

exec recipes-train "model=llama31_${MODEL_SIZE}" "dtype=${DTYPE}" "$@"
