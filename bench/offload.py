"""Offload and quantization on a GPU: time, peak memory, and whether the images stay the same.

    .venv/bin/python bench/offload.py [--model tiny|DIR] [--quantize none,int8,fp8]
                                      [--offload none,model,group] [--size 512] [--steps 8]

For every (quantize, offload) pair: the engine loaded through the server's loader (`load_engine`), then one
text-to-image and one image-to-image request (one reference: the vision tower runs) with fixed seeds. Prints
seconds per request, peak GPU memory (`torch.cuda.max_memory_allocated`, loading included) and the largest
pixel difference from the same quantization without offload: offloading moves weights, it must not change
them, so 0 is expected (streams and hooks that miss a module show up here as an error or a difference).
Needs CUDA for `model`/`group` and `fp8`; on the CPU only `none` runs (`model` is a no-op there).
Use `--model DIR` with a directory from `bench/full_size.py`'s `save_full_size_pipeline` for real shapes.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import numpy as np
import torch
from PIL import Image

from glm_image_server.config import Settings
from glm_image_server.core.request import GenerationRequest
from glm_image_server.engine.loader import load_engine
from glm_image_server.slices import EngineSettings


def requests(size: int, steps: int) -> list[tuple[GenerationRequest, list[Image.Image]]]:
    reference = Image.fromarray(np.random.default_rng(1).integers(0, 255, (size, size, 3), dtype=np.uint8))
    common = {"width": size, "height": size, "num_inference_steps": steps, "seed": 7}
    return [
        (GenerationRequest(prompt="a shop sign that reads 'OPEN'", **common), []),
        (GenerationRequest(prompt="make it blue", references=("stored:ref-0",), **common), [reference]),
    ]


def run(model: str, quantize: str, offload: str, size: int, steps: int) -> tuple[float, float, list]:
    """Seconds per request, peak GiB, and the images."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    settings = Settings(model=model, device=device, quantize=quantize, offload=offload)
    engine = load_engine(EngineSettings.from_settings(settings))
    images, spent = [], []
    for request, references in requests(size, steps):
        engine.generate([request], [references])  # warm-up (graph capture, lazy prefetch order)
        start = time.perf_counter()
        (result,) = engine.generate([request], [references])
        spent.append(time.perf_counter() - start)
        images.append(np.asarray(result.images[0], dtype=np.int16))
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    del engine
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return sum(spent) / len(spent), peak, images


def max_difference(images: list[np.ndarray], baseline: list[np.ndarray]) -> int:
    return max(int(np.abs(a - b).max()) for a, b in zip(images, baseline, strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--quantize", default="none,int8,fp8")
    parser.add_argument("--offload", default="none,model,group")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"model={args.model} device={name} size={args.size} steps={args.steps} (t2i and i2i, 1 reference)")
    print("| quantize | offload | s / request | peak GiB | max pixel diff vs offload=none |")
    print("| --- | --- | --- | --- | --- |")
    for quantize in args.quantize.split(","):
        baseline = None
        for offload in args.offload.split(","):
            try:
                seconds, peak, images = run(args.model, quantize, offload, args.size, args.steps)
            except Exception as exc:  # a refusal (fp8 on an older GPU) or a failure: say it, go on
                print(f"| {quantize} | {offload} | failed: {type(exc).__name__}: {str(exc)[:120]} | | |")
                continue
            baseline = images if baseline is None and offload == "none" else baseline
            diff = "-" if baseline is None else max_difference(images, baseline)
            print(f"| {quantize} | {offload} | {seconds:.2f} | {peak:.2f} | {diff} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
