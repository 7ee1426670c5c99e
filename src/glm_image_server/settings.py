"""One settings object: environment variables GLM_IMAGE_*, overridden by CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "zai-org/GLM-Image"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GLM_IMAGE_", extra="ignore")

    model: str = Field(
        default="tiny",
        description=f"'tiny' (random-weight demo model, built offline), a Hugging Face id such as "
        f"{DEFAULT_MODEL}, or a local directory in diffusers format",
    )
    device: Literal["auto", "cuda", "cpu", "mps"] = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    cpu_offload: bool = Field(default=False, description="move each component to the GPU only while it runs")
    cache_dir: Path = Field(default=Path.home() / ".cache" / "glm-image-server")
