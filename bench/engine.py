"""Engine benchmark: latency per size, and batched versus sequential throughput, measured side by side.

    .venv/bin/python bench/engine.py [--model tiny] [--repeats 5]

Prints the median latency of one request at 64², 512² and 1024² (4 steps), then the throughput ratio of
8 prompts in one engine call versus 8 sequential calls at 256², and the same ratio for the stock diffusers
pipeline. Each pair is timed in alternating rounds so machine noise hits both sides alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from _common import alternate, timed

from glm_image_server.config import Settings
from glm_image_server.core.request import GenerationRequest
from glm_image_server.engine.engine import Engine
from glm_image_server.engine.loader import load_pipeline, quiet_library_logs
from glm_image_server.slices import EngineSettings

PROMPTS = [f"a shop sign that reads 'OPEN {i}' above a door, photo" for i in range(8)]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument(
        "--batch-size", type=int, default=256, help="side of the batching comparison's images"
    )
    args = parser.parse_args()

    quiet_library_logs()
    pipe = load_pipeline(EngineSettings.from_settings(Settings(model=args.model)))
    engine = Engine(pipe)
    print(f"model={args.model} device={engine.device} threads={torch.get_num_threads()} steps={args.steps}")

    def request(prompt: str, side: int, seed: int = 0) -> GenerationRequest:
        return GenerationRequest(
            prompt=prompt, width=side, height=side, num_inference_steps=args.steps, seed=seed
        )

    print(f"\nlatency, one request (median of {args.repeats})")
    for side in (64, 512, 1024):
        single = [request(PROMPTS[0], side)]
        (result,) = engine.generate(single)  # warm-up; its stage timings are printed
        median = statistics.median(timed(lambda s=single: engine.generate(s)) for _ in range(args.repeats))
        t = result.timings
        print(f"  {side:>4}²  {median:6.2f} s   (AR {t.ar:.2f} s, DiT {t.dit:.2f} s, VAE {t.vae:.2f} s)")

    side = args.batch_size
    batch = [request(p, side, seed=i) for i, p in enumerate(PROMPTS)]
    batched, sequential = alternate(
        lambda: engine.generate(batch), lambda: [engine.generate([r]) for r in batch], args.repeats
    )
    print(f"\nengine, 8 prompts at {side}²: batched {batched:.2f} s, sequential {sequential:.2f} s")
    print(f"  throughput ratio batched/sequential: {sequential / batched:.2f}x")

    def stock(prompts: list[str]) -> object:
        return pipe(
            prompt=prompts,
            height=side,
            width=side,
            num_inference_steps=args.steps,
            generator=torch.Generator().manual_seed(0),
        )

    stock_batched, stock_sequential = alternate(
        lambda: stock(PROMPTS), lambda: [stock([p]) for p in PROMPTS], args.repeats
    )
    print(f"stock pipeline, 8 prompts at {side}²: batched {stock_batched:.2f} s, ", end="")
    print(f"sequential {stock_sequential:.2f} s")
    print(f"  throughput ratio batched/sequential: {stock_sequential / stock_batched:.2f}x")
    print(f"  engine batched vs stock batched: {stock_batched / batched:.2f}x throughput")
    print(f"  engine batched vs stock sequential: {stock_sequential / batched:.2f}x throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
