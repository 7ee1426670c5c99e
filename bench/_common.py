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


def alternate(
    a: Callable[[], object], b: Callable[[], object], rounds: int, *more: Callable[[], object]
) -> tuple[float, ...]:
    """Median seconds of a, of b (and of each of `more`), run a, b, ..., a, b, ... after one warm-up each,
    so that the machine's noise hits all alike."""
    runs = (a, b, *more)
    for run in runs:
        run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for run, spent in zip(runs, times, strict=True):
            spent.append(timed(run))
    return tuple(statistics.median(spent) for spent in times)
