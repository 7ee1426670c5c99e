"""Load a GlmImagePipeline from a Hugging Face id, a local directory, or the tiny offline model: only the
components the worker's role runs, quantized (quantize.py) and placed or offloaded (offload.py) as asked."""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch

from ..slices import EngineSettings
from .offload import check_offload, offload_mode, place
from .quantize import check_quantize, quantize_pipeline

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# What each role runs; decode needs the processor for its image processor (reference sizing).
PRIOR_COMPONENTS = ("vision_language_encoder", "processor")
DECODE_COMPONENTS = ("text_encoder", "tokenizer", "transformer", "vae", "scheduler", "processor")
ALL_COMPONENTS = tuple(dict.fromkeys(PRIOR_COMPONENTS + DECODE_COMPONENTS))
QUIET_AT_IMPORT = ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer")
ROLE_COMPONENTS = {"prior": PRIOR_COMPONENTS, "decode": DECODE_COMPONENTS, "all": ALL_COMPONENTS}


class Placement(NamedTuple):
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
    """Silence diffusers/transformers load bars and chatter, and torchao's import without its CUDA kernels
    (before the import: diffusers and transformers import torchao themselves where it is installed)."""
    for name in QUIET_AT_IMPORT:
        logging.getLogger(name).setLevel(logging.ERROR)
    import diffusers
    import transformers

    for library in (diffusers, transformers):
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()


def role_overrides(role: str) -> dict[str, None]:
    """`from_pretrained` overrides that leave out the components `role` does not run (None: not loaded)."""
    if role not in ROLE_COMPONENTS:
        raise ValueError(f"role must be one of {', '.join(ROLE_COMPONENTS)}, not {role!r}")
    return {name: None for name in ALL_COMPONENTS if name not in ROLE_COMPONENTS[role]}


def load_pipeline(settings: EngineSettings):
    """The role's components from `from_pretrained`, quantized and placed (or offloaded); modes the device
    cannot run are refused before any weight is read."""
    from diffusers import GlmImagePipeline

    from .tiny import ensure_tiny_model  # transformers, imported after quiet_library_logs where it runs

    placement = resolve_placement(settings.device, settings.dtype)
    offload = offload_mode(settings.offload, settings.cpu_offload)
    check_quantize(settings.quantize, placement.device)
    check_offload(offload, placement.device)
    source = str(ensure_tiny_model(settings.cache_dir)) if settings.model == "tiny" else settings.model
    log.info(
        "loading GLM-Image (role %s) from %s on %s (%s, quantize %s, offload %s)",
        settings.role,
        source,
        placement.device,
        placement.dtype,
        settings.quantize,
        offload,
    )
    try:
        pipe = GlmImagePipeline.from_pretrained(
            source, dtype=placement.dtype, **role_overrides(settings.role)
        )
    except (OSError, ValueError) as exc:  # hub unreachable, no such repo, no such directory
        raise RuntimeError(
            f"could not load GLM-Image from {source!r}: {exc}. Pass a Hugging Face id with network access "
            f"to the hub, a local directory holding the diffusers-format weights, or 'tiny'."
        ) from exc
    # Quantized where the weights will live: straight onto the GPU when they stay there, on the CPU when
    # they are offloaded (the offload hooks then move the quantized tensors).
    quantize_pipeline(pipe, settings.quantize, placement.device if offload == "none" else None)
    place(pipe, offload, placement.device)
    pipe.set_progress_bar_config(disable=True)
    # Batched AR generation takes each row's new tokens from the end of a left-padded batch.
    pipe.processor.tokenizer.padding_side = "left"
    return pipe


def ar_fast_path(settings: EngineSettings) -> bool | None:
    """The AR fast path's switch for the Engine: off under offload=group, whose hooks move the weights a
    captured CUDA graph would read (asking for both is refused)."""
    if offload_mode(settings.offload, settings.cpu_offload) != "group":
        return settings.ar_fast_path
    if settings.ar_fast_path:
        raise RuntimeError("ar_fast_path (a CUDA graph of the AR step) cannot run under offload=group")
    return False


def load_engine(settings: EngineSettings):
    """The one way the CLI, a worker and the benchmarks get a ready Engine for `settings`."""
    quiet_library_logs()
    from .engine import Engine  # diffusers: imported once its logs are quiet

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    pipe = load_pipeline(settings)
    cache = settings.cache_dir / "previews"
    return Engine(
        pipe, ar_fast_path(settings), settings.batched_cfg, settings.vae_tiling, settings.previews, cache
    )
