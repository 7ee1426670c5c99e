"""Shared by the benchmarks: side-by-side timing, and the real server in a subprocess (the test suite's
helper)."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers.serving import ServerProcess, free_port

__all__ = ["ServerProcess", "alternate", "free_port", "timed"]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(a: Callable[[], object], b: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Median seconds of a and of b, run a, b, a, b, ... after one warm-up each, so that the machine's
    noise hits both alike."""
    a(), b()
    times_a, times_b = [], []
    for _ in range(rounds):
        times_a.append(timed(a))
        times_b.append(timed(b))
    return statistics.median(times_a), statistics.median(times_b)
