"""Where the weights live while the model runs: all on the device, whole components in turn, or streamed.

  none   every component on the device (the fastest; needs room for all of the role's weights).
  model  diffusers' `enable_model_cpu_offload` (the older `cpu_offload: true`): each component moves to the
         GPU whole while it runs, then back, so the GPU holds the largest one at a time.
  group  diffusers' group offloading with CUDA streams: weights stay in pinned CPU memory and move to the GPU
         a group at a time, the next copied while the current one computes. The DiT goes by blocks; the AR
         model leaf by leaf, since its vision tower, VQ model and embeddings are called outside its `forward`
         and only leaf-level hooks onload a module wherever it is called from. The glyph encoder and the VAE
         are small (0.2B and 0.4B parameters) and stay on the GPU.

`group` moves every weight over the bus per forward: once per DiT step, but also once per AR token (about
1300 per image at 1024²), so it suits the DiT far better. It needs CUDA streams, and rules out the AR fast
path's CUDA graph, whose replays would read weights the hooks have since moved. On the CPU there is nothing
to offload to: `model` is ignored there (as `cpu_offload` always was) and `group` refused.
"""

from __future__ import annotations

import logging
import types

import torch

log = logging.getLogger(__name__)

OFFLOAD_MODES = ("none", "model", "group")
ON_DEVICE_UNDER_GROUP = ("text_encoder", "vae")  # small: placed on the GPU rather than streamed
# Called before the AR model's `forward` for image-to-image; model offload's hook moves it on `forward` only.
AR_ENTRY_POINTS = ("get_image_features", "get_image_tokens")


def offload_mode(offload: str, cpu_offload: bool) -> str:
    """The offload mode from the two settings: `cpu_offload: true` is the older spelling of `model`."""
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, not {offload!r}")
    if not cpu_offload or offload == "model":
        return offload
    if offload == "none":
        return "model"
    raise RuntimeError(f"cpu_offload (the older name of offload=model) contradicts offload={offload}")


def check_offload(mode: str, device: torch.device) -> None:
    """Refuse a mode this device cannot run (RuntimeError: one line from the CLI), before anything loads."""
    if mode == "group" and device.type != "cuda":
        raise RuntimeError(
            f"offload=group streams weights to a CUDA GPU; on the {device.type} device there is nothing to "
            f"offload to (use offload=none)"
        )


def place(pipe, mode: str, device: torch.device) -> None:
    """Put the pipeline's components where `mode` says, for running on `device`."""
    if mode == "model" and device.type != "cpu":
        pipe.enable_model_cpu_offload(device=device)
        if pipe.vision_language_encoder is not None:
            onload_on_call(pipe.vision_language_encoder, AR_ENTRY_POINTS)
    elif mode == "group":
        _group_offload(pipe, device)
    else:
        if mode == "model":
            log.info("offload=model has no effect on the CPU: the weights stay where they are")
        pipe.to(device)


def onload_on_call(module: torch.nn.Module, methods: tuple[str, ...]) -> None:
    """Make these methods of `module` move it to the GPU first, as its `forward` does under model offload
    (diffusers' `apply_forward_hook`, which does the same for the VAE's `encode` and `decode`)."""
    from diffusers.utils.accelerate_utils import apply_forward_hook

    for name in methods:
        unbound = getattr(type(module), name)
        setattr(module, name, types.MethodType(apply_forward_hook(unbound), module))


def _group_offload(pipe, device: torch.device) -> None:
    """Block-level streaming for the DiT, leaf-level for the AR model, the small components on `device`."""
    from diffusers.hooks import apply_group_offloading

    common = {"onload_device": device, "offload_device": torch.device("cpu"), "use_stream": True}
    if pipe.transformer is not None:
        pipe.transformer.enable_group_offload(offload_type="block_level", num_blocks_per_group=1, **common)
    if pipe.vision_language_encoder is not None:
        apply_group_offloading(pipe.vision_language_encoder, offload_type="leaf_level", **common)
    for name in ON_DEVICE_UNDER_GROUP:
        component = getattr(pipe, name, None)
        if component is not None:
            component.to(device)
