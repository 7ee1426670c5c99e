"""Stage overlap: does running the next batch's AR stage while this batch is in its DiT stage help on
this device? Sequential (AR A, DiT+VAE A, AR B, DiT+VAE B) versus overlapped (AR B on a second thread
during DiT+VAE A), side by side.

    .venv/bin/python bench/stage_overlap.py [--rounds 3] [--side 256] [--steps 10]

Tiny model, two batches of 4 prompts. Prints medians and the speed-up of the overlapped order.
"""

from __future__ import annotations

import argparse
import threading

import torch
from _common import alternate

from glm_image_server.config import Settings
from glm_image_server.core.request import GenerationRequest
from glm_image_server.engine.loader import load_engine, quiet_library_logs
from glm_image_server.engine.prior import PriorTokens, generate_prior_tokens
from glm_image_server.slices import EngineSettings


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    quiet_library_logs()
    engine = load_engine(EngineSettings.from_settings(Settings(model="tiny", device="cpu")))
    spec = GenerationRequest(prompt="x", width=args.side, height=args.side, num_inference_steps=args.steps)
    Rows = list[tuple[str, int]]  # (prompt, seed) per image
    batches: list[Rows] = [
        [(f"a sign that reads 'OPEN {b}{i}'", b * 10 + i) for i in range(4)] for b in range(2)
    ]

    def ar(rows: Rows) -> PriorTokens:
        generators = [torch.Generator("cpu").manual_seed(seed) for _, seed in rows]
        return generate_prior_tokens(
            engine.pipe, [prompt for prompt, _ in rows], spec.height, spec.width, None, generators
        )

    def dit_vae(rows: Rows, prior: PriorTokens) -> None:
        # The engine's own steps, below its lock (which would serialise the two threads).
        for r, (prompt, seed) in enumerate(rows):
            row_spec = GenerationRequest(prompt, spec.width, spec.height, spec.num_inference_steps, seed=seed)
            latents = engine._denoise(row_spec, seed, (), prior.row(r), lambda _p, _s, _t, tensors: tensors)
            engine._decode(latents)

    def sequential() -> None:
        for rows in batches:
            dit_vae(rows, ar(rows))

    def overlapped() -> None:
        first = ar(batches[0])
        second: list[PriorTokens] = []
        worker = threading.Thread(target=lambda: second.append(ar(batches[1])))
        worker.start()
        dit_vae(batches[0], first)
        worker.join()
        dit_vae(batches[1], second[0])

    with torch.inference_mode():
        s, o = alternate(sequential, overlapped, args.rounds)
    print(f"2 batches of 4 at {args.side}², {args.steps} steps, {torch.get_num_threads()} torch threads")
    print(f"sequential {s:.2f} s   overlapped {o:.2f} s   speed-up {s / o:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
