#!/usr/bin/env bash
# Creates .venv and installs the project into it; cheap to re-run (does nothing when up to date).
#   scripts/bootstrap.sh          what `glm-image` needs (scripts/glm-image runs this)
#   scripts/bootstrap.sh --dev    plus the test and lint tools (scripts/test runs this)
#   scripts/bootstrap.sh --plan   print what pip would install for torch here, without installing
# Torch comes first: without an NVIDIA GPU, the CPU build of 2.13.0 from PyTorch's CPU wheel index (a
# plain `pip install torch` on Linux resolves the CUDA build: several GB of nvidia-* packages); where
# `nvidia-smi` works, the default CUDA build; or whatever torch the venv already has (bring your own
# CUDA build by installing it into .venv first). Wheels your pip configuration offers (find-links, a
# local mirror) are used as well, so a machine without internet access but with a local wheel works.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
CPU_INDEX="https://download.pytorch.org/whl/cpu"
mode="${1:-}"

has_nvidia() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; }

# The pip arguments that install torch on this machine, and a line saying what that is.
torch_args() {
  if has_nvidia; then
    torch_spec=(torch)
    torch_note="torch (CUDA build: about 2.5 GB download with its nvidia-* packages, about 5 GB installed)"
  elif [ "$(uname -s)" = "Linux" ]; then
    torch_spec=("torch==$TORCH_VERSION" --index-url "$CPU_INDEX" --retries 1 --timeout 20)
    torch_note="torch $TORCH_VERSION, CPU build, from $CPU_INDEX (about 190 MB download, 0.8 GB installed)"
  else  # macOS: PyPI's wheels are the CPU/MPS build
    torch_spec=("torch==$TORCH_VERSION")
    torch_note="torch $TORCH_VERSION (about 80 MB download, 0.4 GB installed)"
  fi
}

if [ "$mode" = "--plan" ]; then
  # What a machine with no pip configuration of its own would install (isolated mode: no config files,
  # no PIP_* variables), as pip's dry-run report: names, versions and where they come from.
  torch_args
  echo "bootstrap plan: $torch_note" >&2
  report="$(mktemp)"
  trap 'rm -f "$report"' EXIT
  "$py" -m pip install --isolated --dry-run --ignore-installed --quiet --report "$report" "${torch_spec[@]}"
  "$py" - "$report" <<'PY'
import json, sys
installs = json.load(open(sys.argv[1]))["install"]
for item in installs:
    meta, url = item["metadata"], item["download_info"]["url"]
    print(f"{meta['name']:<28} {meta['version']:<16} {url.split('/')[2] or 'a local file'}")
nvidia = [i["metadata"]["name"] for i in installs if i["metadata"]["name"].startswith("nvidia")]
print(f"{len(installs)} packages, {len(nvidia)} of them nvidia-*")
PY
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "bootstrap: creating $venv" >&2
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)

if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  torch_args
  echo "bootstrap: installing $torch_note" >&2
  if ! "${pip[@]}" "${torch_spec[@]}"; then
    # The CPU index unreachable and no local wheel: PyPI's own build (on Linux that is the CUDA one).
    echo "bootstrap: the CPU index failed; installing torch==$TORCH_VERSION from your default index" >&2
    "${pip[@]}" "torch==$TORCH_VERSION"
  fi
  "$venv/bin/python" -c "import torch; print(f'bootstrap: torch {torch.__version__} installed', file=__import__('sys').stderr)"
fi

extras=""
[ "$mode" = "--dev" ] && extras="[dev,fleet]"  # fleet: Ray Serve, for its tests (about 50 s, 400 MB)
stamp="$venv/.glm-image-installed"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
# Installed with the dev extras satisfies a plain call too; a --dev call needs them.
if [ "$have" != "$want dev" ] && { [ -n "$extras" ] || [ "$have" != "$want" ]; }; then
  echo "bootstrap: installing glm-image-server${extras:+ with its test tools} and its dependencies" >&2
  "${pip[@]}" -e "$root$extras"
  echo "$want${extras:+ dev}" > "$stamp"
  echo "bootstrap: $venv now takes $(du -sh "$venv" | cut -f1)" >&2
  # rapidocr-onnxruntime asks for opencv-python, nudenet for opencv-python-headless: both fill cv2/, and
  # the last one installed wins. Put the headless build back last: it needs no libGL.
  headless="$("$venv/bin/python" -m pip show opencv-python-headless 2>/dev/null | sed -n 's/^Version: //p')"
  if [ -n "$headless" ]; then
    "${pip[@]}" --force-reinstall --no-deps "opencv-python-headless==$headless"
  fi
fi
