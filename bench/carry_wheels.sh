#!/usr/bin/env bash
# Download into .whl/ (git-ignored) the wheels the GPU machine lacks for issue 6's benchmarks:
# this project's own dependencies, torchtitan 0.2.2 and its dependencies, megatron-core.
# Run it here (a machine that reaches PyPI), from the repo root, before a GPU session; the
# device tool then carries .whl/ (name it in `carry`). Wheels are for the GPU machine's
# Python 3.12 on x86_64 Linux; torch 2.11 is there already and is not carried.
#
# The GPU machine already has (docs: .library/device/KINDS.md): lightning, lightning-utilities,
# torchmetrics, huggingface-hub, tokenizers, pyarrow, pandas, fsspec, einops, psutil,
# tensorboard, pillow, xxhash, requests, tqdm, pyyaml, typing-extensions, packaging.
#
# In every `run` command that needs them, begin with the printed install prefix.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(
  # recipes (pyproject dependencies the GPU machine lacks)
  hydra-core==1.3.8 omegaconf==2.3.1 torchao==0.18.0
  # torchtitan 0.2.2 (its newest release built against torch 2.11) and what it imports
  torchtitan==0.2.2 torchdata==0.11.0 tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.0
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
  # backend=megatron rows (the version this project is tested with)
  megatron-core==0.16.1
)
PLATFORMS=(manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64
  manylinux_2_27_x86_64 manylinux_2_28_x86_64 manylinux1_x86_64)

mkdir -p .whl
args=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl -q)
for platform in "${PLATFORMS[@]}"; do args+=(--platform "$platform"); done
python3 -m pip download "${args[@]}" "${WHEELS[@]}"
# omegaconf and hydra pin antlr4-python3-runtime 4.9.*, published as a source archive only:
# build its (pure Python) wheel here.
python3 -m pip wheel -q --no-deps --no-binary=:all: -w .whl antlr4-python3-runtime==4.9.3

ls -l .whl
echo "total: $(du -ch .whl/*.whl | tail -1 | cut -f1) in $(ls .whl/*.whl | wc -l) wheels (limit 64 MiB)"
cat <<'EOF'
install prefix for `run` commands (carry: [".whl"]):
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 || exit;
EOF
