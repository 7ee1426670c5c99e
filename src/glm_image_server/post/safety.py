"""NSFW checking of generated images, behind a small interface so the detector can be swapped. The default
is NudeNet, whose package ships an ONNX detector that runs offline on the CPU (tens of ms per image); an
image is flagged when a detection of a configured label scores at least the threshold. `safety_checker`
may also name a `module:Class` made with `(threshold, labels)` that has `check(images) -> list[bool]`."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from PIL import Image

from ..config import DEFAULT_LABELS


class SafetyChecker(Protocol):
    def check(self, images: Sequence[Image.Image]) -> list[bool]:
        """One flag per image: True means NSFW."""


class NudeNetChecker:
    def __init__(self, threshold: float = 0.5, labels: Sequence[str] = DEFAULT_LABELS) -> None:
        self.threshold, self.labels = threshold, frozenset(labels)
        self._detector = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._detector is None:
                from nudenet import NudeDetector

                self._detector = NudeDetector()
        return self._detector

    def detections(self, image: Image.Image) -> list[dict]:
        # NudeNet converts its input from RGBA to BGR itself.
        return self._load().detect(np.asarray(image.convert("RGBA")))

    def check(self, images: Sequence[Image.Image]) -> list[bool]:
        return [
            any(d["class"] in self.labels and d["score"] >= self.threshold for d in self.detections(image))
            for image in images
        ]


def load_checker(name: str, threshold: float, labels: Sequence[str]) -> SafetyChecker | None:
    """'nudenet', 'none' (no checking), or 'module:Class'."""
    if name == "none":
        return None
    if name == "nudenet":
        return NudeNetChecker(threshold, labels)
    return named_class("safety checker", name)(threshold, labels)


def named_class(kind: str, name: str) -> type:
    """The class a `module:Class` setting names; RuntimeError when it cannot be loaded."""
    module, _, attribute = name.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise RuntimeError(f"{kind} {name!r} cannot be loaded: {exc}") from exc
