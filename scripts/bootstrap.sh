#!/usr/bin/env bash
# Creates .venv and installs the project into it; cheap to re-run (does nothing when up to date).
# Torch comes first: the CPU build 2.13.0 on a machine without an NVIDIA GPU (any other spec would pull
# several GB of CUDA packages), the default CUDA build where nvidia-smi works, or whatever torch the
# venv already has (bring your own CUDA build by installing it into .venv first).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "bootstrap: creating $venv" >&2
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)

if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "bootstrap: installing torch (CUDA build)" >&2
    "${pip[@]}" torch
  else
    echo "bootstrap: installing torch==2.13.0 (CPU build)" >&2
    "${pip[@]}" torch==2.13.0
  fi
fi

stamp="$venv/.glm-image-installed"
want="$(cat "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing glm-image-server and its dependencies" >&2
  "${pip[@]}" -e "$root[dev]"
  echo "$want" > "$stamp"
fi
