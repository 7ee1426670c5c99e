"""Cheap live previews of the DiT's latents: a linear latent -> RGB projection, fitted once per model.

A VAE decode per preview would cost about a DiT step; a per-pixel linear map from latent channels to RGB is
one small matmul at latent resolution and looks like a blurred image, which a progress preview needs. It is
fitted by least squares against the model's own VAE on smooth random colour fields (latents normalised as
the DiT sees them, images pooled to latent resolution), from its own generator so a generation's RNG is
untouched, and cached in memory per engine and on disk when given a directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FIT_IMAGES, FIT_SIDE = 8, 256


def latent_stats(vae, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's per-channel latent mean and std, shaped to broadcast over (N, C, h, w) latents."""
    shape = (1, vae.config.latent_channels, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(device, dtype)
    std = torch.tensor(vae.config.latents_std).view(shape).to(device, dtype)
    return mean, std


def _cache_key(vae) -> str:
    """Weights of the VAE's first decoder layer and its config: the same VAE gives the same key."""
    first = next(vae.decoder.parameters()).detach().float().cpu().numpy().tobytes()
    config = json.dumps(dict(vae.config), sort_keys=True, default=str).encode()
    return hashlib.sha256(first + config).hexdigest()[:16]


class PreviewProjection:
    """`weight` (3, C) and `bias` (3,): RGB in [-1, 1] from normalised latents, pixel by pixel."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.weight, self.bias = weight.float(), bias.float()

    @classmethod
    def fit(cls, vae) -> PreviewProjection:
        device, dtype = vae.device, vae.dtype
        # Smooth colour fields in [-1, 1]: a coarse random grid, upsampled.
        coarse = torch.rand((FIT_IMAGES, 3, 4, 4), generator=torch.Generator("cpu").manual_seed(0)) * 2 - 1
        images = torch.nn.functional.interpolate(coarse, size=(FIT_SIDE,) * 2, mode="bicubic").clamp(-1, 1)
        mean, std = latent_stats(vae, device, dtype)
        latents = []
        for image in images:  # one at a time: bounded activation memory on any VAE
            encoded = vae.encode(image[None].to(device, dtype)).latent_dist.mode()
            latents.append(((encoded - mean) / std).float().cpu())
        z = torch.cat(latents)  # (N, C, h, w)
        target = torch.nn.functional.adaptive_avg_pool2d(images, z.shape[-2:])  # (N, 3, h, w)
        x = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        x = torch.cat([x, torch.ones((x.shape[0], 1))], dim=1)
        y = target.permute(0, 2, 3, 1).reshape(-1, 3)
        solution = torch.linalg.lstsq(x.double(), y.double()).solution.float()  # (C + 1, 3)
        return cls(solution[:-1].T.contiguous(), solution[-1].contiguous())

    @classmethod
    def load_or_fit(cls, vae, cache_dir: Path | None) -> PreviewProjection:
        path = Path(cache_dir) / f"preview-projection-{_cache_key(vae)}.pt" if cache_dir else None
        if path is not None and path.is_file():
            saved = torch.load(path, weights_only=True)
            return cls(saved["weight"], saved["bias"])
        projection = cls.fit(vae)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_suffix(".tmp")
            torch.save({"weight": projection.weight, "bias": projection.bias}, staging)
            staging.replace(path)
        return projection

    def __call__(self, latents: torch.Tensor) -> Image.Image:
        """(1, C, h, w) normalised latents -> an h x w RGB image (1/8 of the output's side on GLM-Image)."""
        z = latents[0].detach().float()
        weight, bias = self.weight.to(z.device), self.bias.to(z.device)
        rgb = torch.einsum("oc,chw->hwo", weight, z) + bias
        pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
        return Image.fromarray(np.ascontiguousarray(pixels), "RGB")


def preview_steps(steps: int, count: int) -> frozenset[int]:
    """The 1-based DiT steps after which a preview is taken: `count`, evenly spread, never the last one."""
    if count <= 0 or steps < 2:
        return frozenset()
    return frozenset(round(steps * k / (count + 1)) for k in range(1, count + 1)) - {0, steps}
