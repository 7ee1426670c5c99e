"""The GPUs a plan places workers on, found without torch (the API process never imports it): the
devices CUDA_VISIBLE_DEVICES names, else every one nvidia-smi lists, each with its memory; or the sizes a
user gives `glm-image plan --gpu-memory 24GB`."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

MIB_PER_GIB = 1024
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(gib|gb|g|mib|mb|m|tib|tb|t)?\s*$", re.IGNORECASE)
_UNIT_GIB = {"g": 1.0, "m": 1 / 1024, "t": 1024.0}
SMI = ["nvidia-smi", "--query-gpu=index,uuid,memory.total", "--format=csv,noheader,nounits"]


@dataclass(frozen=True)
class Gpu:
    """`index`: the GPU's place among the visible ones (what `prior@1` names, and torch's `cuda:1` in the
    serving process); `device`: what its worker's CUDA_VISIBLE_DEVICES says; `total_gib`: its memory,
    None where it could not be read."""

    index: int
    device: str
    total_gib: float | None


# nvidia-smi's rows: (index, uuid, memory.total in MiB); [] where it is missing or fails.
SmiQuery = Callable[[], list[tuple[str, str, float]]]


def nvidia_smi() -> list[tuple[str, str, float]]:
    try:
        out = subprocess.check_output(SMI, stderr=subprocess.DEVNULL, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) == 3:
            try:
                rows.append((fields[0], fields[1], float(fields[2])))
            except ValueError:  # "[N/A]" memory (some MIG setups): known by id, size unknown
                rows.append((fields[0], fields[1], float("nan")))
    return rows


def _memory(device: str, rows: list[tuple[str, str, float]]) -> float | None:
    """The memory of the device CUDA_VISIBLE_DEVICES names by index or by (a prefix of) its UUID."""
    for index, uuid, mib in rows:
        if device == index or (device.startswith("GPU-") and uuid.startswith(device)):
            return None if mib != mib else mib / MIB_PER_GIB  # NaN: unknown
    return None


def visible_gpus(query: SmiQuery = nvidia_smi, environ: dict[str, str] | None = None) -> list[Gpu]:
    """The GPUs this machine's workers may use, in CUDA's order. CUDA_VISIBLE_DEVICES, where set, decides
    which (a GPU it names that nvidia-smi cannot size is kept, its memory unknown)."""
    rows = query()
    visible = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [Gpu(i, index, _memory(index, rows)) for i, (index, _uuid, _mib) in enumerate(rows)]
    devices = [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    return [Gpu(i, device, _memory(device, rows)) for i, device in enumerate(devices)]


def parse_gpu_memory(text: str) -> float:
    """A GPU's memory in GiB: `24GB`, `24GiB`, `24G`, `24564MiB` or `24` (GiB). GB means GiB here, as
    GPU makers count: a "24 GB" card has 24 GiB (nvidia-smi: 24564 MiB)."""
    match = _SIZE.match(text)
    if not match or float(match[1]) <= 0:
        raise ValueError(f"--gpu-memory {text!r}: expected a size such as 24GB, 80GiB or 24564MiB")
    return float(match[1]) * _UNIT_GIB[(match[2] or "g")[0].lower()]


def given_gpus(sizes: list[str]) -> list[Gpu]:
    """GPUs 0, 1, ... of the sizes given on the command line."""
    return [Gpu(i, str(i), parse_gpu_memory(size)) for i, size in enumerate(sizes)]
