"""Weight quantization of the two big modules, through torchao: less GPU memory for the same model.

Only the AR language model's decoder layers (8.2B of the AR model's 10.1B parameters) and the DiT (6.9B) are
quantized: the vision tower, the VQ model, the AR embeddings and head, the glyph encoder and the VAE keep
their dtype (together about 2.5B parameters, and the parts most sensitive to rounding).

  int8  weight-only int8, one scale per output row (`Int8WeightOnlyConfig`): about half the bytes of bf16;
        runs wherever torch runs (CPU included), activations stay in the model's dtype.
  fp8   float8 (e4m3) weights, one scale per row, upcast for the model's matmuls (`Float8WeightOnlyConfig`):
        also about half the bytes; CUDA compute capability 8.9 or higher (Ada, Hopper, Blackwell), refused
        elsewhere before any weight is loaded. fp8 matmuls (`Float8DynamicActivationFloat8WeightConfig`,
        per row) failed on the DiT on an H200 (cuBLAS "not supported"; torch 2.11, torchao 0.17), so they
        are not used. On that H200 both fp8 forms were slower than int8 and erred more (docs/benchmarks.md).

Quantization is opt-in: where memory allows bf16, bf16 is what the model was released in (docs/benchmarks.md
has the measured error of each mode against it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch

QUANTIZE_MODES = ("none", "int8", "fp8")
FP8_CAPABILITY = (8, 9)
TORCHAO_HINT = "install torchao (pip install 'torchao>=0.18,<0.19'), which glm-image-server depends on"


def check_quantize(mode: str, device: torch.device) -> None:
    """Refuse a mode this device cannot run (RuntimeError: said as one line by the CLI), before anything
    is loaded; `none` always passes."""
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}, not {mode!r}")
    if mode == "none":
        return
    if mode == "fp8":
        if device.type != "cuda":
            raise RuntimeError(
                f"quantize=fp8 needs a CUDA GPU of compute capability 8.9 or higher (Ada, Hopper, "
                f"Blackwell), not the {device.type} device; use quantize=int8, which runs everywhere"
            )
        capability = torch.cuda.get_device_capability(device)
        if capability < FP8_CAPABILITY:
            name = torch.cuda.get_device_name(device)
            raise RuntimeError(
                f"quantize=fp8 needs CUDA compute capability 8.9 or higher; {name} has "
                f"{capability[0]}.{capability[1]}; use quantize=int8"
            )
    _torchao()


def _torchao():
    """torchao, imported quietly (it warns about CUDA kernels it cannot load on a CPU-only torch)."""
    logging.getLogger("torchao").setLevel(logging.ERROR)
    try:
        import torchao.quantization
    except ImportError as exc:
        raise RuntimeError(f"quantization needs torchao: {TORCHAO_HINT} ({exc})") from exc
    return torchao.quantization


def torchao_config(mode: str) -> Any:
    """torchao's config object for a mode other than `none`."""
    q = _torchao()
    if mode == "int8":
        return q.Int8WeightOnlyConfig()
    if mode == "fp8":
        return q.Float8WeightOnlyConfig()
    raise ValueError(f"no torchao config for quantize={mode!r}")


def quantized_modules(pipe) -> dict[str, torch.nn.Module]:
    """The modules quantization applies to, among those this pipeline has (a role loads some only)."""
    modules: dict[str, torch.nn.Module] = {}
    vle = getattr(pipe, "vision_language_encoder", None)
    if vle is not None:
        modules["ar_language_model"] = vle.model.language_model.layers
    transformer = getattr(pipe, "transformer", None)
    if transformer is not None:
        modules["dit"] = transformer
    return modules


def _is_linear(module: torch.nn.Module, _fqn: str) -> bool:
    return isinstance(module, torch.nn.Linear)


def quantize_pipeline(pipe, mode: str, device: torch.device | None = None) -> list[str]:
    """Quantize the pipeline's big modules' Linear weights in place (moved to `device` first, one Linear at
    a time, when given); returns the names of the modules quantized."""
    if mode == "none":
        return []
    q, config = _torchao(), torchao_config(mode)
    modules = quantized_modules(pipe)
    for module in modules.values():
        q.quantize_(module, config, filter_fn=_is_linear, device=device)
    return list(modules)


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds; a torchao tensor subclass is counted by its inner tensors (int8 data and
    scales), not by the dtype it stands for."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is None:
        return tensor.numel() * tensor.element_size()
    names, _ = flatten()
    return sum(tensor_bytes(getattr(tensor, name)) for name in names if getattr(tensor, name) is not None)


def _tensors(module: torch.nn.Module) -> Iterator[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers as stored (quantized ones as their int8/fp8 data plus
    scales)."""
    return sum(tensor_bytes(t) for t in _tensors(module))
