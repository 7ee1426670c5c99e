"""Load a GlmImagePipeline from a Hugging Face id, a local directory, or the tiny offline model."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..config import EngineSettings
from .tiny import ensure_tiny_model

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype


def resolve_placement(device: str = "auto", dtype: str = "auto") -> Placement:
    """auto: CUDA, then MPS, then CPU; bf16 on a GPU, fp32 on the CPU (bf16 matmuls are slow there)."""
    if device == "auto":
        device = (
            "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
        )
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "bfloat16"
    return Placement(torch.device(device), DTYPES[dtype])


def quiet_library_logs() -> None:
    """Silence diffusers/transformers load bars and per-call chatter where our own progress is shown."""
    import diffusers
    import transformers

    for library in (diffusers, transformers):
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()


def load_pipeline(settings: EngineSettings):
    """Load the pipeline with `from_pretrained`, placed on its device (or set up for CPU offload)."""
    from diffusers import GlmImagePipeline

    placement = resolve_placement(settings.device, settings.dtype)
    source = str(ensure_tiny_model(settings.cache_dir)) if settings.model == "tiny" else settings.model
    log.info("loading GLM-Image from %s on %s (%s)", source, placement.device, placement.dtype)
    try:
        pipe = GlmImagePipeline.from_pretrained(source, dtype=placement.dtype)
    except (OSError, ValueError) as exc:  # hub unreachable, no such repo, no such directory
        raise RuntimeError(
            f"could not load GLM-Image from {source!r}: {exc}. Pass a Hugging Face id with network access "
            f"to the hub, a local directory holding the diffusers-format weights, or 'tiny'."
        ) from exc
    if settings.cpu_offload and placement.device.type != "cpu":
        pipe.enable_model_cpu_offload(device=placement.device)
    else:
        pipe.to(placement.device)
    pipe.set_progress_bar_config(disable=True)
    # Batched AR generation takes each row's new tokens from the end of a left-padded batch.
    pipe.processor.tokenizer.padding_side = "left"
    return pipe


def load_engine(settings: EngineSettings):
    """The one way the CLI, a worker and the benchmarks get a ready Engine for `settings`."""
    from .engine import Engine

    quiet_library_logs()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    pipe = load_pipeline(settings)
    return Engine(
        pipe,
        settings.ar_fast_path,
        settings.batched_cfg,
        settings.vae_tiling,
        previews=settings.previews,
        preview_cache=settings.cache_dir / "previews",
    )
