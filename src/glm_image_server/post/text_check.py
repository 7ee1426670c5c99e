"""Reading back the text quoted in a prompt (what GLM-Image is chosen for), per image, behind a small
interface so the reader can be swapped. The default is RapidOCR, whose wheel ships the PP-OCR ONNX models,
so it runs offline on the CPU; `text_checker` may also name a `module:Class` made with no arguments that
has `check(images, spans) -> list[TextCheck]`. Spans and OCR text are normalised (NFKC, case-folded, no
whitespace or punctuation); a span is found when it occurs in the text, its similarity is that of the best
matching stretch, and an image's score is the mean similarity of its spans."""

from __future__ import annotations

import difflib
import threading
import unicodedata
from collections.abc import Sequence
from typing import Protocol

from PIL import Image

from ..core.results import SpanCheck, TextCheck
from .safety import named_class


class TextChecker(Protocol):
    def check(self, images: Sequence[Image.Image], spans: Sequence[str]) -> list[TextCheck]:
        """One check per image, of the same spans."""


def normalise(text: str) -> str:
    """Case, width, whitespace and punctuation do not count: what is left is letters, digits and symbols."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(c for c in folded if not c.isspace() and not unicodedata.category(c).startswith("P"))


def similarity(span: str, text: str) -> float:
    """How well `span` appears in `text` (both normalised): the best ratio over the stretches of the text
    within two characters of its length (a letter dropped or added by the renderer or the reader)."""
    if span in text:
        return 1.0
    if len(text) <= len(span):
        return difflib.SequenceMatcher(None, span, text, autojunk=False).ratio()
    lengths = range(max(1, len(span) - 2), min(len(text), len(span) + 2) + 1)
    return max(
        difflib.SequenceMatcher(None, span, text[i : i + n], autojunk=False).ratio()
        for n in lengths
        for i in range(len(text) - n + 1)
    )


def compare(spans: Sequence[str], detected: str) -> TextCheck:
    """The check of one image whose reader found `detected`."""
    text = normalise(detected)
    checks = []
    for span in spans:
        key = normalise(span)
        ratio = similarity(key, text)
        checks.append(SpanCheck(text=span, found=bool(key) and key in text, similarity=round(ratio, 4)))
    score = sum(c.similarity for c in checks) / len(checks) if checks else 1.0
    return TextCheck(score=round(score, 4), spans=tuple(checks), detected_text=detected)


class RapidOcrChecker:
    """PP-OCR through RapidOCR's ONNX runtime, loaded on first use. `threads` bounds onnxruntime's threads
    per model (0: every core); one, the default, was faster on a busy 2-core machine (bench/text_check.py)
    and leaves the other cores to the API. No direction classifier: quoted text stands upright."""

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._ocr = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._ocr is None:
                from rapidocr_onnxruntime import RapidOCR

                threads = self.threads if self.threads > 0 else -1
                self._ocr = RapidOCR(use_cls=False, intra_op_num_threads=threads, inter_op_num_threads=1)
        return self._ocr

    def read(self, image: Image.Image) -> str:
        """The lines of text found, top to bottom, one per line."""
        lines, _ = self._load()(image.convert("RGB"))
        return "\n".join(line[1] for line in lines or ())

    def check(self, images: Sequence[Image.Image], spans: Sequence[str]) -> list[TextCheck]:
        return [compare(spans, self.read(image)) for image in images]


def load_text_checker(name: str, threads: int = 1) -> TextChecker | None:
    """'rapidocr', 'none' (no checking), or 'module:Class' (made with no arguments)."""
    if name == "none":
        return None
    if name == "rapidocr":
        return RapidOcrChecker(threads)
    return named_class("text checker", name)()


def ranked(checks: Sequence[TextCheck | None]) -> list[int]:
    """Image indexes, best score first; ties (and unchecked images) keep seed order."""
    return sorted(range(len(checks)), key=lambda i: -(checks[i].score if checks[i] else 0.0))
