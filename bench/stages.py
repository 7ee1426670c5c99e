"""Stage split: one mixed workload through two `all` workers and through a `prior` and a `decode` worker,
side by side in one run: jobs/s and each stage's queue and run times.

    .venv/bin/python bench/stages.py [--rounds 3] [--repeat 2]

Each arrangement is one API process (`serve --workers 0`) and two `glm-image worker` processes (one torch
thread each; GLM_IMAGE_ROLE=all,all or prior,decode) on a throwaway database of the local PostgreSQL
(127.0.0.1:5432, trust auth) and a data directory of their own. The workload, submitted at once as fal
queue jobs: every combination of 64² and 128², 10 and 20 steps, text-to-image and an edit with one
reference (64² noise), `--repeat` times (16 jobs by default), new seeds each round, the same seeds in
both arrangements of a round (whose images are compared byte for byte). Rounds alternate so the
machine's noise hits both alike. Prints the median jobs/s of each and their ratio, and the median of each
result's `timings` (queue: submission to the AR stage; ar; decode_queue: handoff to the decode stage;
dit; vae) over all jobs.
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
from _common import ServerProcess
from helpers.fleet import WorkerProcess
from helpers.stores import throwaway_database
from PIL import Image

from glm_image_server.config import Settings

QUEUE = "/queue/fal-ai/glm-image"
PLANS = {"2 all workers": ("all", "all"), "prior + decode": ("prior", "decode")}
TIMINGS = ("queue", "ar", "decode_queue", "dit", "vae")


def reference() -> str:
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def workload(repeat: int, seed: int) -> list[tuple[str, dict]]:
    """(queue path, fal request) of the mixed workload: sizes x steps x (t2i, edit), `repeat` times."""
    jobs, ref = [], reference()
    for n, (_, side, steps, edit) in enumerate(
        itertools.product(range(repeat), (64, 128), (10, 20), (False, True))
    ):
        body = {
            "prompt": f"a shop sign that reads 'STAGE {n}'",
            "image_size": {"width": side, "height": side},
            "num_inference_steps": steps,
            "seed": seed + n,
            "output_format": "png",
            "enable_safety_checker": False,
        }
        jobs.append(("/image-to-image", {**body, "image_urls": [ref]}) if edit else ("", body))
    return jobs


class Arrangement:
    """One API process and two workers of the given roles on a database and data directory of their own."""

    def __init__(self, roles: tuple[str, str], url: str, root: Path, cache: Path) -> None:
        env = {
            "GLM_IMAGE_DATABASE_URL": url,
            "GLM_IMAGE_SAFETY_CHECKER": "none",
            "GLM_IMAGE_TORCH_THREADS": "1",
            "GLM_IMAGE_WORKER_NICE": "0",
            "GLM_IMAGE_SUBMIT_RATE_PER_CLIENT": "1000",  # the workload arrives at once
        }
        self.workers = [
            WorkerProcess(root / "data", cache, {**env, "GLM_IMAGE_ROLE": role}, f"{role}-{i}")
            for i, role in enumerate(roles)
        ]
        self.api = ServerProcess(root / "data", cache, env=env, args=("--workers", "0"))
        self.client: httpx.Client | None = None

    def start(self) -> Arrangement:
        for worker in self.workers:
            worker.start()
        self.api.start()
        self.client = httpx.Client(base_url=self.api.base_url, timeout=60)
        deadline = time.monotonic() + 300
        while sum(w["state"] == "ready" for w in self.client.get("/ready").json()["workers"]) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError("the workers did not get ready")
            time.sleep(0.5)
        return self

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        self.api.stop()
        for worker in self.workers:
            worker.stop()

    def run(self, jobs: list[tuple[str, dict]]) -> tuple[float, list[dict], list[bytes]]:
        """Seconds from the first submission to the last completion; each job's timings and image."""
        client = self.client
        assert client is not None
        start = time.perf_counter()
        ids = [
            client.post(f"{QUEUE}{path}", json=body).raise_for_status().json()["request_id"]
            for path, body in jobs
        ]
        pending, deadline = set(ids), time.monotonic() + 900
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} jobs did not complete")
            status = {i: client.get(f"{QUEUE}/requests/{i}/status").json()["status"] for i in pending}
            pending = {i for i, s in status.items() if s != "COMPLETED"}
            time.sleep(0.1)  # fal_client polls every 0.1 s
        spent = time.perf_counter() - start
        results = [client.get(f"{QUEUE}/requests/{i}").json() for i in ids]
        images = [client.get(result["images"][0]["url"]).content for result in results]
        return spent, [result["timings"] for result in results], images


def median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2, help="copies of the 8-job mix per round")
    args = parser.parse_args()
    root, cache = Path(tempfile.mkdtemp(prefix="bench-stages-")), Settings().cache_dir
    rates: dict[str, list[float]] = {name: [] for name in PLANS}
    timings: dict[str, list[dict]] = {name: [] for name in PLANS}
    mismatches = 0
    with ExitStack() as stack:
        arrangements = {}
        for name, roles in PLANS.items():
            url = stack.enter_context(throwaway_database())
            (place := root / "-".join(roles)).mkdir()
            arrangements[name] = Arrangement(roles, url, place, cache)
            stack.callback(arrangements[name].stop)
            arrangements[name].start()
        for arrangement in arrangements.values():
            arrangement.run(workload(1, 10**6))  # warm-up
        for r in range(args.rounds):
            jobs = workload(args.repeat, 1000 * r)
            images = {}
            for name, arrangement in arrangements.items():
                spent, found, images[name] = arrangement.run(jobs)
                rates[name].append(len(jobs) / spent)
                timings[name] += found
            a, b = images.values()
            mismatches += sum(x != y for x, y in zip(a, b, strict=True))
    jobs = len(workload(args.repeat, 0))
    print(
        f"{jobs} jobs per round (64²/128², 10/20 steps, text-to-image and a one-reference edit), tiny "
        f"model, one torch thread per worker, {args.rounds} alternating rounds on {os.cpu_count()} CPU cores"
    )
    names = list(PLANS)
    print(f"{'':24}" + "".join(f"{name:>18}" for name in names))
    print(f"{'jobs/s (median)':24}" + "".join(f"{statistics.median(rates[n]):>18.3f}" for n in names))
    for key in TIMINGS:
        row = [median([t[key] for t in timings[n] if key in t]) for n in names]
        print(f"{key + ' s (median)':24}" + "".join(f"{v:>18}" for v in row))
    ratio = statistics.median(rates[names[1]]) / statistics.median(rates[names[0]])
    print(f"{names[1]} / {names[0]}: {ratio:.2f}x jobs/s")
    for name in names:
        print(f"{name} jobs/s by round: {', '.join(f'{x:.2f}' for x in rates[name])}")
    print(f"images differing between the two for the same seed: {mismatches} of {jobs * args.rounds}")


if __name__ == "__main__":
    main()
