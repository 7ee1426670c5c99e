"""Batching: 8 concurrent fal queue submissions through the server versus 8 sequential calls of the stock
diffusers pipeline, side by side.

    .venv/bin/python bench/batching.py [--rounds 3] [--side 256] [--steps 10]

Tiny model. Throughput ratio = time of the 8 sequential stock `GlmImagePipeline` calls / time from the
first submission until all 8 results are in (goal: >= 4x). The server runs with default settings; the
requests turn the safety checker off, as the stock pipeline has none. Clients poll every 0.1 s, as
fal_client does. Rounds alternate; medians.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch
from _common import ServerProcess, alternate

from glm_image_server.config import Settings
from glm_image_server.engine.loader import load_pipeline, quiet_library_logs
from glm_image_server.slices import EngineSettings

PROMPTS = [f"a shop sign that reads 'OPEN {i}' above a door, photo" for i in range(8)]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    quiet_library_logs()
    settings = EngineSettings.from_settings(Settings(model="tiny", device="cpu"))
    pipe = load_pipeline(settings)
    pipe.set_progress_bar_config(disable=True)

    def sequential() -> None:
        for i, prompt in enumerate(PROMPTS):
            pipe(
                prompt=prompt,
                height=args.side,
                width=args.side,
                num_inference_steps=args.steps,
                generator=torch.Generator("cpu").manual_seed(i),
            )

    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", settings.cache_dir).start()
        client = httpx.Client(base_url=server.base_url, timeout=600)
        size = {"width": args.side, "height": args.side}

        def one(i: int) -> None:
            body = {
                "prompt": PROMPTS[i],
                "image_size": size,
                "num_inference_steps": args.steps,
                "seed": i,
                "enable_safety_checker": False,  # the stock pipeline runs none either
            }
            submitted = client.post("/queue/fal-ai/glm-image", json=body).json()
            while client.get(submitted["status_url"]).status_code == 202:
                time.sleep(0.1)  # fal_client polls every 0.1 s
            client.get(submitted["response_url"]).raise_for_status()

        def served() -> None:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(one, range(8)))

        try:
            q, s = alternate(sequential, served, args.rounds)
        finally:
            server.stop()
    print(
        f"8 images at {args.side}², {args.steps} steps, tiny model, {args.rounds} alternating rounds; medians"
    )
    print(f"8 sequential stock pipeline calls: {q:.2f} s")
    print(f"8 concurrent submissions to the server: {s:.2f} s")
    print(f"throughput ratio: {q / s:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
