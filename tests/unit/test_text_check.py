"""The text check directly: the real OCR (RapidOCR's shipped models) reading signs drawn with Pillow, the
span scoring, the best-of-N plan a dialect makes, and the post stage choosing among candidates. (Through a
server, in every dialect: tests/e2e/test_verified_text.py.)"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.doubles import ScoreByPixels
from PIL import Image, ImageDraw, ImageFont

from glm_image_server.config import Settings
from glm_image_server.core.request import GenerationRequest, InvalidRequest, OutputSpec, with_candidates
from glm_image_server.core.results import GenerationResult, SpanCheck, TextCheck
from glm_image_server.media.storage import LocalStorage
from glm_image_server.post.stage import PostContext, finish_images
from glm_image_server.post.text_check import (
    RapidOcrChecker,
    compare,
    load_text_checker,
    normalise,
    ranked,
)
from glm_image_server.slices import PricingSettings

CJK_FONTS = (  # Debian's fonts-wqy-microhei, fonts-wqy-zenhei, fonts-noto-cjk
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
)


def cjk_font() -> str | None:
    """A font with Chinese glyphs: a known Debian path, else whatever fontconfig offers for zh."""
    for path in CJK_FONTS:
        if Path(path).exists():
            return path
    if shutil.which("fc-list"):
        listed = subprocess.run(
            ["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10
        ).stdout.split()
        return next(
            (line.rstrip(":") for line in listed if line.rstrip(":").endswith((".ttf", ".ttc", ".otf"))), None
        )
    return None


def sign(text: str, font: ImageFont.FreeTypeFont, size: int = 1024) -> Image.Image:
    """A dark board with a light panel and the text on it, like a shop sign."""
    image = Image.new("RGB", (size, size), (40, 90, 60))
    draw = ImageDraw.Draw(image)
    draw.rectangle((size * 0.12, size * 0.37, size * 0.88, size * 0.63), fill=(245, 240, 220))
    draw.text((size / 2, size / 2), text, font=font, fill=(20, 20, 20), anchor="mm")
    return image


@pytest.fixture(scope="module")
def ocr() -> RapidOcrChecker:
    return RapidOcrChecker()


@pytest.fixture(scope="module")
def latin() -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=110)  # Pillow's own scalable font (Aileron), shipped in its wheel


def test_a_sign_with_the_quoted_text_scores_found(ocr, latin) -> None:
    [check] = ocr.check([sign("OPEN LATE", latin)], ["OPEN LATE"])
    assert check.spans == (SpanCheck(text="OPEN LATE", found=True, similarity=1.0),)
    assert check.score == 1.0 and "OPEN LATE" in check.detected_text


def test_a_misspelt_sign_is_missing_the_span(ocr, latin) -> None:
    [check] = ocr.check([sign("OPEN LAT", latin)], ["OPEN LATE", "open lat"])
    late, lat = check.spans
    assert not late.found and 0.5 < late.similarity < 1.0
    assert lat.found and lat.similarity == 1.0  # case and spaces do not count
    assert check.score == pytest.approx((late.similarity + 1.0) / 2, abs=1e-3)


def test_chinese_text_is_read(ocr) -> None:
    path = cjk_font()
    if path is None:
        pytest.skip("no CJK font: scripts/test installs Debian's fonts-wqy-microhei where apt-get can run")
    [check] = ocr.check([sign("河畔植物标本馆", ImageFont.truetype(path, 110))], ["河畔植物标本馆"])
    assert check.spans[0].found and check.score == 1.0


def test_noise_has_no_text(ocr) -> None:
    noise = Image.effect_noise((256, 256), 80).convert("RGB")
    [check] = ocr.check([noise], ["OPEN"])
    assert check.spans == (SpanCheck(text="OPEN", found=False, similarity=0.0),) and check.score == 0.0


def test_scoring_ignores_case_width_whitespace_and_punctuation() -> None:
    assert normalise("  Open, LATE!\n") == "openlate"
    assert normalise("\uff2f\uff30\uff25\uff2e「营业」") == "open营业"  # full-width letters, CJK brackets
    check = compare(["Open late!", "RIVERBANK"], "Hours: OPEN  LATE\nRIVERBNK HERBARIUM")
    assert check.spans[0] == SpanCheck(text="Open late!", found=True, similarity=1.0)
    assert not check.spans[1].found and check.spans[1].similarity == pytest.approx(16 / 17, abs=1e-3)
    assert compare(["x"], "").spans[0].similarity == 0.0


def test_checkers_load_by_name() -> None:
    assert load_text_checker("none") is None
    assert isinstance(load_text_checker("rapidocr"), RapidOcrChecker)
    assert isinstance(load_text_checker("helpers.doubles:ScoreByPixels"), ScoreByPixels)
    with pytest.raises(RuntimeError, match="cannot be loaded"):
        load_text_checker("no_such_module:Checker")


def test_candidates_become_images_to_make_and_a_number_to_keep() -> None:
    request, output = GenerationRequest(prompt="a sign 'OPEN'", seed=7, num_images=2), OutputSpec()
    assert with_candidates(request, output, False, 1) == (request, output)
    made, kept = with_candidates(request, output, False, 5)
    assert made.num_images == 5 and made.seeds == [7, 8, 9, 10, 11]
    assert kept.text_check and kept.keep_best == 2
    made, kept = with_candidates(request, output, True, 2)  # no more candidates than images: check all
    assert made == request and kept.text_check and kept.keep_best == 0
    plain = GenerationRequest(prompt="no quoted text", num_images=1)
    made, kept = with_candidates(plain, output, True, 4)  # nothing to rank by: no extra candidates
    assert made == plain and kept.text_check and kept.keep_best == 0
    with pytest.raises(InvalidRequest, match="between 1 and 8"):
        with_candidates(request, output, True, 9)


def _check(score: float) -> TextCheck:
    return TextCheck(score=score, spans=(SpanCheck(text="A", found=score == 1, similarity=score),))


def test_ranking_keeps_seed_order_on_ties() -> None:
    assert ranked([_check(0.5), _check(0.9), _check(0.5), _check(0.9)]) == [1, 3, 0, 2]


class Scripted:
    """Scores the candidates as told."""

    def __init__(self, scores: list[float]) -> None:
        self.scores, self.calls = scores, []

    def check(self, images, spans):
        self.calls.append(list(spans))
        return [_check(score) for score in self.scores]


def test_the_post_stage_keeps_the_best_candidates(tmp_path) -> None:
    colours = [(i * 40, 0, 0) for i in range(4)]
    generated = GenerationResult([Image.new("RGB", (100, 100), c) for c in colours], [20, 21, 22, 23])
    checker = Scripted([0.2, 0.9, 0.4, 0.9])
    pricing = PricingSettings.from_settings(Settings(data_dir=tmp_path, price_per_megapixel=1.0))
    ctx = PostContext(LocalStorage(tmp_path / "files"), None, pricing, checker)
    logs: list[str] = []
    result = finish_images(
        ctx,
        generated,
        OutputSpec(format="png", text_check=True, keep_best=2),
        "job",
        "an expanded prompt keeping \u201cA\u201d",
        {},
        lambda message, level: logs.append(message),
        asked_prompt="a sign \u201cA\u201d",
    )
    assert checker.calls == [["A"]]
    assert [image.seed for image in result.images] == [21, 23]  # best first; the tie in seed order
    assert [c.score for c in result.text_checks] == [0.9, 0.9]
    assert result.has_nsfw_concepts == (False, False)
    assert result.cost == pytest.approx(4 * 100 * 100 / 1e6)  # every candidate made
    assert result.timings["text_check"] >= 0
    assert any(line.startswith("Text check of 'A'") and "seed 20: score 0.20" in line for line in logs)
    assert "Best of 4 candidates by text score: kept seed 21 (score 0.90), seed 23 (score 0.90)" in logs
    stored = Image.open(tmp_path / "files" / result.images[0].key)
    assert stored.getpixel((0, 0)) == colours[1]


def test_the_post_stage_says_when_it_skips(tmp_path) -> None:
    generated = GenerationResult([Image.new("RGB", (8, 8))] * 2, [1, 2])
    pricing = PricingSettings.from_settings(Settings(data_dir=tmp_path))
    ctx = PostContext(LocalStorage(tmp_path), None, pricing, Scripted([1.0, 1.0]))
    logs: list[tuple[str, str]] = []

    def run(prompt: str, output: OutputSpec, context: PostContext = ctx):
        return finish_images(context, generated, output, "x", prompt, {}, lambda *line: logs.append(line))

    assert run("no quotes", OutputSpec(text_check=True)).text_checks is None
    assert ("Text check skipped: the prompt quotes no text", "INFO") in logs
    logs.clear()
    assert run("'A'", OutputSpec()).text_checks is None  # not asked for
    assert not any("Text check" in message for message, _ in logs)
    off = PostContext(LocalStorage(tmp_path), None, pricing, None)
    result = run("'A'", OutputSpec(text_check=True, keep_best=1), off)
    assert result.text_checks is None and [image.seed for image in result.images] == [1]
    assert ("Text checking is turned off on this server: no text_checks", "WARN") in logs
    assert ("Best of 2: no text check, so the first 1 candidate(s) in seed order", "WARN") in logs
