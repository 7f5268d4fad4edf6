#!/usr/bin/env bash
# Set up longyarn in ./.venv. With an NVIDIA GPU, pip takes a CUDA build of torch and Triton;
# without one, torch 2.13.0 (a CPU build where pip's wheel folder has one) keeps the install small.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q -e ".[gpu,dev]"
else
  # Installed first so that the project's "torch>=2.3" is already met and pip adds no CUDA build.
  .venv/bin/python -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION:-2.13.0}"
  .venv/bin/python -m pip install -q -e ".[dev]"
fi
echo "longyarn is installed in .venv; run .venv/bin/longyarn --help" >&2
