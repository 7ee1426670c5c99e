"""Post-processing pieces directly: the NudeNet checker, loading a checker by name, the quoted texts
prompt expansion must keep, and pricing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from glm_image_server.core.request import quoted_texts
from glm_image_server.post.safety import NudeNetChecker, load_checker
from glm_image_server.post.stage import cost
from glm_image_server.slices import PricingSettings


def test_nudenet_checker_directly() -> None:
    checker = NudeNetChecker()
    gradient = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (256, 1))).convert("RGB")
    assert checker.check([gradient, Image.new("RGB", (300, 200), (210, 160, 130))]) == [False, False]
    assert isinstance(checker.detections(gradient), list)
    assert load_checker("none", 0.5, ()) is None
    assert isinstance(load_checker("nudenet", 0.5, ()), NudeNetChecker)
    with pytest.raises(RuntimeError, match="cannot be loaded"):
        load_checker("no_such_module:Checker", 0.5, ())


def test_quoted_texts() -> None:
    english = "a sign that reads 'OPEN' and it's red, a \"SALE 50%\" banner"
    assert quoted_texts(english) == ["OPEN", "SALE 50%"]
    mixed = "\u201cCafé\u201d \u2018x y\u2019 「你好」 『书名』 《标题》 don't"
    assert quoted_texts(mixed) == ["Café", "x y", "你好", "书名", "标题"]


def test_pricing() -> None:
    images = [Image.new("RGB", (1000, 500))] * 2
    assert cost(PricingSettings("megapixel", 0.05, 0.0), images, 12.0) == pytest.approx(0.05)
    per_second = PricingSettings("gpu_second", 0.05, 0.002)
    assert cost(per_second, images, 12.0) == pytest.approx(0.024)


def test_the_safety_double_loads_by_name() -> None:
    """The name the e2e servers are given (GLM_IMAGE_SAFETY_CHECKER) resolves to the double."""
    checker = load_checker("helpers.doubles:FlagOddImages", 0.5, ())
    assert checker.check([Image.new("RGB", (8, 8))] * 3) == [False, True, False]
