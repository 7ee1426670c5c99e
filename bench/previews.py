"""Live previews benchmark: DiT time of one request with previews on versus off, side by side.

    .venv/bin/python bench/previews.py [--model tiny] [--size 512] [--steps 30] [--previews 6] [--rounds 5]

"On" is the whole worker-side path of a preview: the latent->RGB projection, the JPEG encode and the write
into a job store (SQLite), as the executor and scheduler do it. The projection is fitted before timing
(once per model; cached). Rounds alternate on/off and off/on so the machine's noise and the order hit
both alike; the final images are compared too (they must be equal). One preview's cost is also timed
alone (projection, JPEG, store write), which a busy machine's noise cannot swamp. The goal is previews
costing at most 5% of the DiT time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import timed

from glm_image_server.config import Settings
from glm_image_server.core.request import GenerationRequest
from glm_image_server.core.results import Preview
from glm_image_server.engine.engine import Engine
from glm_image_server.engine.loader import load_pipeline, quiet_library_logs
from glm_image_server.slices import EngineSettings
from glm_image_server.store.sql import SqlJobStore
from glm_image_server.worker.executor import encode_preview


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--previews", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    quiet_library_logs()
    settings = EngineSettings.from_settings(Settings(model=args.model))
    pipe = load_pipeline(settings)
    engine = Engine(pipe, previews=args.previews, preview_cache=settings.cache_dir / "previews")
    store = SqlJobStore(f"sqlite:///{Path(tempfile.mkdtemp(prefix='bench-previews-')) / 'jobs.sqlite3'}")
    request = GenerationRequest("a neon sign that reads 'LIVE'", args.size, args.size, args.steps, seed=7)
    taken: list[Preview] = []

    spent: list[float] = []

    def on_preview(preview: Preview) -> None:
        start = time.perf_counter()
        taken.append(preview)
        store.set_preview("bench", encode_preview(preview))
        spent.append(time.perf_counter() - start)

    def run(previews: bool):
        (result,) = engine.generate([request], on_preview=on_preview if previews else None)
        return result

    run(True), run(True), run(False)  # warm-up; fits the projection
    on, off, same = [], [], True
    for round_ in range(args.rounds):  # on, off, then off, on: the order's own effect cancels out
        first = round_ % 2 == 0
        a, b = run(first), run(not first)
        with_previews, without = (a, b) if first else (b, a)
        on.append(with_previews.timings.dit)
        off.append(without.timings.dit)
        same &= np.array_equal(np.asarray(with_previews.images[0]), np.asarray(without.images[0]))
    dit_on, dit_off = statistics.median(on), statistics.median(off)
    per_run = len(taken) // (args.rounds + 2)  # warm-up included
    latents = torch.randn((1, pipe.vae.config.latent_channels, args.size // 8, args.size // 8))
    with torch.inference_mode():
        project = statistics.median(timed(lambda: engine._projection(latents)) for _ in range(50))
    print(f"model {args.model}, {args.size}x{args.size}, {args.steps} steps, {per_run} previews per image")
    print(f"{'DiT time, previews off':<28}{dit_off * 1000:10.1f} ms")
    print(f"{'DiT time, previews on':<28}{dit_on * 1000:10.1f} ms")
    print(f"{'cost of previews':<28}{(dit_on / dit_off - 1) * 100:+10.1f} %  (goal <= 5 %)")
    one = project + statistics.median(spent)
    print(f"{'one preview, measured alone':<28}{one * 1000:10.2f} ms  (projection {project * 1000:.2f} ms, ")
    print(f"{'':<28}{'':>10}     JPEG + store write {statistics.median(spent) * 1000:.2f} ms)")
    print(f"{'all previews / DiT time':<28}{one * per_run / dit_off * 100:10.2f} %")
    print(f"final images identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
