"""Server overhead: a fal sync request end to end versus a direct Engine.generate call, side by side.

    .venv/bin/python bench/server_overhead.py [--repeats 5] [--steps 10]

Tiny model. The server runs in a subprocess (`glm-image serve`, default settings, the safety checker
off so the figure is the server's own cost: HTTP, job store, scheduler, JPEG encode, file storage);
the direct call runs in this process on the same model. Rounds alternate so noise hits both alike.
Prints the median of each and their ratio (goal: <= 1.05), at 64² and 1024², then the same with the
default NudeNet check on, for reference.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import httpx
from _common import ServerProcess, alternate

from glm_image_server.config import EngineSettings, Settings
from glm_image_server.core.request import GenerationRequest
from glm_image_server.engine.loader import load_engine, quiet_library_logs


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    quiet_library_logs()
    settings = EngineSettings.from_settings(Settings(model="tiny", device="cpu"))
    engine = load_engine(settings)
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", settings.cache_dir).start()
        try:
            client = httpx.Client(base_url=server.base_url, timeout=600)
            print(f"tiny model, {args.steps} steps, {args.repeats} alternating rounds; medians")
            for checker in (False, True):
                for side in (64, 1024):
                    body = {
                        "prompt": "a shop sign that reads 'OPEN'",
                        "image_size": {"width": side, "height": side},
                        "num_inference_steps": args.steps,
                        "seed": 1,
                        "enable_safety_checker": checker,
                    }
                    request = GenerationRequest(
                        prompt=body["prompt"], width=side, height=side, num_inference_steps=args.steps, seed=1
                    )

                    def direct(request: GenerationRequest = request) -> None:
                        engine.generate([request])

                    def served(body: dict = body) -> None:
                        response = client.post("/fal-ai/glm-image", json=body)
                        response.raise_for_status()

                    d, s = alternate(direct, served, args.repeats)
                    label = "safety check on " if checker else "safety check off"
                    print(f"{side:>4}²  {label}  direct {d:.3f} s  server {s:.3f} s  ratio {s / d:.3f}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
