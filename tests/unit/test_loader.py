"""Loading: placement defaults, the tiny model's cache, and a clear error for weights that aren't there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glm_image_server.config import Settings
from glm_image_server.engine.loader import load_pipeline, resolve_placement
from glm_image_server.engine.tiny import ensure_tiny_model
from glm_image_server.slices import EngineSettings


def test_cpu_defaults_to_float32_and_gpu_to_bfloat16() -> None:
    assert resolve_placement("cpu", "auto") == resolve_placement("cpu", "float32")
    assert resolve_placement("cpu", "auto").dtype == torch.float32
    assert resolve_placement("cuda", "auto").dtype == torch.bfloat16
    assert resolve_placement("cpu", "bfloat16").dtype == torch.bfloat16


def test_tiny_model_is_saved_in_hf_format_and_built_once(pipe, model_cache: Path) -> None:
    directory = ensure_tiny_model(model_cache)
    index = directory / "model_index.json"
    assert index.is_file() and (directory / "vision_language_encoder" / "model.safetensors").is_file()
    assert (directory / "processor" / "tokenizer.json").is_file()
    built_at = index.stat().st_mtime_ns
    assert ensure_tiny_model(model_cache) == directory and index.stat().st_mtime_ns == built_at
    # The session's pipeline came from that directory through from_pretrained.
    assert Path(pipe.config["_name_or_path"]) == directory


def test_tiny_build_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    state = torch.get_rng_state()
    ensure_tiny_model(tmp_path)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("model", ["zai-org/GLM-Image", "/nonexistent/GLM-Image"])
def test_unavailable_weights_fail_with_a_clear_message(model: str, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="could not load GLM-Image from") as caught:
        load_pipeline(EngineSettings.from_settings(Settings(model=model, device="cpu", cache_dir=tmp_path)))
    assert "'tiny'" in str(caught.value)
