"""Server overhead: a fal sync request end to end versus a direct Engine.generate call, side by side.

    .venv/bin/python bench/server_overhead.py [--repeats 5] [--steps 10] [--sizes 64 1024]
        [--torch-threads N] [--baseline DIR]

Tiny model. The server runs in a subprocess (`glm-image serve`, default settings, the safety checker
off so the figure is the server's own cost: HTTP, job store, scheduler, JPEG encode, file storage);
the direct call runs in this process on the same model, at the worker's CPU priority (`worker_nice`).
Rounds alternate so noise hits both alike. Prints the median of each and their ratio (goal: <= 1.10 at
64²), per size, then the same with the default NudeNet check on, for reference.

`--torch-threads N` gives both sides N torch threads (default: torch's own choice, the CPU count): on a
CPU other processes keep busy, two OpenMP threads that wait for each other make a 64² call ten times
slower, and the figure says more about the scheduler than about the server. `--baseline DIR` runs a
second server from another checkout's `src/` (e.g. `git worktree add /tmp/base main`) in the same
rounds, so a change is measured before and after under the same load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import httpx
import torch
from _common import ServerProcess, alternate

from glm_image_server.config import Settings
from glm_image_server.core.request import GenerationRequest
from glm_image_server.engine.loader import load_engine, quiet_library_logs
from glm_image_server.slices import EngineSettings


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--torch-threads", type=int, default=None)
    parser.add_argument("--baseline", type=Path, default=None, help="a checkout to compare with")
    args = parser.parse_args()

    quiet_library_logs()
    env = {}
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
        env["GLM_IMAGE_TORCH_THREADS"] = str(args.torch_threads)
    full = Settings(model="tiny", device="cpu")
    settings = EngineSettings.from_settings(full)
    engine = load_engine(settings)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"server": None, "baseline": args.baseline} if args.baseline else {"server": None}
        servers = {name: start(Path(tmp) / name, settings, env, tree) for name, tree in trees.items()}
        os.nice(full.worker_nice)  # the direct call at the worker's priority: a busy CPU slows both alike
        try:
            clients = {name: httpx.Client(base_url=s.base_url, timeout=600) for name, s in servers.items()}
            print(f"tiny model, {args.steps} steps, {args.repeats} alternating rounds; medians")
            for checker in (False, True):
                for side in args.sizes:
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

                    def served(client: httpx.Client, body: dict = body) -> None:
                        response = client.post("/fal-ai/glm-image", json=body)
                        response.raise_for_status()

                    runs = [lambda client=client: served(client) for client in clients.values()]
                    d, *s = alternate(direct, runs[0], args.repeats, *runs[1:])
                    label = "safety check on " if checker else "safety check off"
                    line = f"{side:>4}²  {label}  direct {d:.3f} s  server {s[0]:.3f} s  ratio {s[0] / d:.3f}"
                    if args.baseline:
                        line += f"  baseline {s[1]:.3f} s  ratio {s[1] / d:.3f}"
                    print(f"{line}  (load {os.getloadavg()[0]:.1f})", flush=True)
        finally:
            for server in servers.values():
                server.stop()
    return 0


def start(data: Path, settings: EngineSettings, env: dict[str, str], tree: Path | None) -> ServerProcess:
    """`glm-image serve` on `data`: this checkout's, or the one in `tree` (its src/ first on the path)."""
    if tree is not None:
        path = [str(tree.resolve() / "src"), os.environ.get("PYTHONPATH", "")]
        env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    return ServerProcess(data, settings.cache_dir, env=env).start()


if __name__ == "__main__":
    raise SystemExit(main())
