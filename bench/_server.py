"""Shared by the server benchmarks: the real server in a subprocess (the test suite's helper)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from serving import ServerProcess, free_port

__all__ = ["ServerProcess", "free_port"]
