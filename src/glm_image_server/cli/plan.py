"""`glm-image plan`: the worker plan `serve` would use — roles per GPU, quantization, offload and the
expected GiB per GPU with the source of each figure — on the visible GPUs or on GPUs of given sizes."""

from __future__ import annotations

import argparse

from ..config import Settings
from ..worker.gpus import given_gpus
from ..worker.plan import SIZES, Plan, plan_for
from ..worker.plan_table import render
from .flags import UsageError, add_settings_flags, settings_from

PLAN_FLAGS = ("workers", "device", "quantize", "offload", "cpu_offload")
LARGE_NOTE = (
    f"{SIZES[-1]}² outputs are not expected to fit every GPU: the VAE decode is the largest figure there; "
    "GLM_IMAGE_VAE_TILING=true decodes in tiles (less memory; pixels change at the seams)."
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "plan",
        help="print the worker plan `serve` would use: roles per GPU, quantization, offload, expected GiB",
        description="The worker processes `serve` would start for the real model (zai-org/GLM-Image, "
        "bf16): each one's role, GPU, quantization and offload, the GPU memory each GPU is expected to "
        "need at 1024² and 2048² outputs (weights from meta-device parameter counts, activation and KV "
        "estimates, each with its source) and whether it fits. Exits 1 when a GPU is not expected to "
        "fit at 1024².",
    )
    parser.add_argument(
        "--gpu-memory",
        action="append",
        metavar="SIZE",
        help="plan for a GPU of this memory instead of the visible ones (24GB, 80GiB, 24564MiB; GB counts "
        "as GPU makers do, 2^30 bytes); once per GPU",
    )
    add_settings_flags(parser, PLAN_FLAGS)


def build(settings: Settings, gpu_memory: list[str] | None, real_model: bool = True) -> Plan:
    """The plan for `settings`, on GPUs of the sizes given (else the visible ones), for the real model's
    memory (or, not `real_model`, as `serve` plans the model in `settings`); one line on error."""
    try:
        return plan_for(settings, given_gpus(gpu_memory) if gpu_memory else None, real_model)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def plan(args: argparse.Namespace) -> int:
    settings = settings_from(args, PLAN_FLAGS)
    if args.gpu_memory and settings.device in ("cpu", "mps"):
        raise UsageError(f"--gpu-memory plans GPUs: drop it, or --device {settings.device}")
    result = build(settings, args.gpu_memory)
    print(render(result), end="")
    if any(result.fits(gpu) and not result.fits(gpu, SIZES[-1]) for gpu in result.gpus):
        print(LARGE_NOTE)
    return 0 if result.fits_every_gpu else 1
