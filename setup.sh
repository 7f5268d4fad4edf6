#!/usr/bin/env bash
# Set up longyarn in ./.venv, with the exact versions the test suite last passed with
# (constraints.txt), so that a release of some dependency tomorrow cannot break a fresh install.
#
#   ./setup.sh            the tested versions (what CI installs)
#   ./setup.sh --latest   the newest versions pyproject.toml allows, to check the drift; then run
#                         the tests and, if they pass, refresh the file with
#                         ./setup.sh --freeze
#
# With an NVIDIA GPU pip takes a CUDA build of torch and Triton; without one, torch is installed
# first at the tested version (a CPU build where pip's wheel folder or TORCH_INDEX_URL has one),
# so a CPU-only machine never downloads a multi-gigabyte CUDA build. CPU and CUDA builds share a
# version number, so one constraints file serves both.
set -euo pipefail
cd "$(dirname "$0")"
mode=${1:-tested}
case "$mode" in
  tested | --latest | --freeze) ;;
  *) echo "usage: ./setup.sh [--latest | --freeze]" >&2; exit 2 ;;
esac

if [ "$mode" = --freeze ]; then
  # Local build labels (+cpu, +cu126) are dropped: the CPU and CUDA builds share the version.
  { echo "# The versions the test suite last passed with; ./setup.sh installs them (see its header)."
    .venv/bin/python -m pip freeze --exclude-editable --all \
      | grep -v -E '^(pip|longyarn)==' | sed -E 's/\+[A-Za-z0-9.]+$//'
  } > constraints.txt
  echo "constraints.txt now holds the versions installed in .venv" >&2
  exit 0
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
TORCH_VERSION=${TORCH_VERSION:-$(sed -n 's/^torch==//p' constraints.txt)}
torch_pin=$(mktemp)
trap 'rm -f "$torch_pin"' EXIT
echo "torch==$TORCH_VERSION" > "$torch_pin"
if [ "$mode" = --latest ]; then
  versions=(--upgrade --upgrade-strategy eager)
else
  versions=(-c constraints.txt)
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "${versions[@]}" -e ".[gpu,dev]"
else
  # Installed first, and held, so that the project's "torch>=2.3" is met and pip adds no CUDA build.
  .venv/bin/python -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==$TORCH_VERSION"
  .venv/bin/python -m pip install -q "${versions[@]}" -c "$torch_pin" -e ".[dev]"
fi
echo "longyarn is installed in .venv; run .venv/bin/longyarn --help" >&2
