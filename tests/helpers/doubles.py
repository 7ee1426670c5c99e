"""Test doubles the server loads by name (GLM_IMAGE_SAFETY_CHECKER=helpers.doubles:FlagOddImages,
GLM_IMAGE_TEXT_CHECKER=helpers.doubles:ScoreByPixels; the server subprocesses of helpers.serving have
tests/ on their PYTHONPATH)."""

from __future__ import annotations

import hashlib

from glm_image_server.core.results import SpanCheck, TextCheck


class FlagOddImages:
    """Flags the 2nd, 4th, ... image of each batch: a positive case no real fixture may provide."""

    def __init__(self, threshold: float, labels) -> None:
        self.threshold, self.labels = threshold, labels

    def check(self, images) -> list[bool]:
        return [i % 2 == 1 for i in range(len(images))]


class ScoreByPixels:
    """A text checker standing in for OCR on the tiny model's noise: each image scores a hash of its
    pixels, so a seed always scores the same and the test can say which candidate must win."""

    @staticmethod
    def score(image) -> float:
        digest = hashlib.sha256(image.convert("RGB").tobytes()).digest()
        return round(int.from_bytes(digest[:4], "big") / 2**32, 4)

    def check(self, images, spans) -> list[TextCheck]:
        checks = []
        for image in images:
            score = self.score(image)
            found = tuple(SpanCheck(text=span, found=score >= 0.5, similarity=score) for span in spans)
            checks.append(TextCheck(score=score, spans=found, detected_text=f"pixels {score}"))
        return checks
