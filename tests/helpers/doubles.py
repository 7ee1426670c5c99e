"""Test doubles the server loads by name (GLM_IMAGE_SAFETY_CHECKER=helpers.doubles:FlagOddImages; the
server subprocesses of helpers.serving have tests/ on their PYTHONPATH)."""

from __future__ import annotations


class FlagOddImages:
    """Flags the 2nd, 4th, ... image of each batch: a positive case no real fixture may provide."""

    def __init__(self, threshold: float, labels) -> None:
        self.threshold, self.labels = threshold, labels

    def check(self, images) -> list[bool]:
        return [i % 2 == 1 for i in range(len(images))]
