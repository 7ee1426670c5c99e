"""Jobs per second with 1 and with 2 worker processes on one PostgreSQL job store, side by side in one run.

    .venv/bin/python bench/fleet.py [--jobs 20] [--rounds 3]

A throwaway database on the local PostgreSQL (127.0.0.1:5432, trust auth), one API process
(`serve --workers 0 --database-url ...`) and two `glm-image worker` processes (one torch thread each)
sharing it: the tiny model, 64², 10 steps, batches of one. Each round submits `--jobs` fal queue jobs at
once and times until the last one completes, first with worker B paused (SIGSTOP while idle: it claims
nothing), then with both; rounds alternate so the machine's noise hits both alike. Prints the median
jobs/s of each and their ratio.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from _common import ServerProcess
from helpers.fleet import WorkerProcess
from helpers.stores import throwaway_database

from glm_image_server.config import Settings

QUEUE = "/queue/fal-ai/glm-image"


def one_round(client: httpx.Client, jobs: int, seed: int) -> float:
    """Seconds from submitting `jobs` jobs to the last one's completion."""
    body = {"prompt": "a sign", "image_size": {"width": 64, "height": 64}, "num_inference_steps": 10}
    start = time.perf_counter()
    ids = [client.post(QUEUE, json={**body, "seed": seed + i}).json()["request_id"] for i in range(jobs)]
    pending = set(ids)
    deadline = time.monotonic() + 600
    while pending and time.monotonic() < deadline:
        pending = {
            i for i in pending if client.get(f"{QUEUE}/requests/{i}/status").json()["status"] != "COMPLETED"
        }
        time.sleep(0.02)
    if pending:
        raise TimeoutError(f"{len(pending)} jobs did not complete")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    cache = Settings().cache_dir
    with throwaway_database() as url:
        env = {
            "GLM_IMAGE_DATABASE_URL": url,
            "GLM_IMAGE_SAFETY_CHECKER": "none",
            "GLM_IMAGE_MAX_BATCH_SIZE": "1",
            "GLM_IMAGE_TORCH_THREADS": "1",
            "GLM_IMAGE_WORKER_NICE": "0",
        }
        workers = [WorkerProcess(root / "data", cache, env, f"worker-{name}").start() for name in "ab"]
        api = ServerProcess(root / "data", cache, env=env, args=("--workers", "0"))
        try:
            api.start()
            with httpx.Client(base_url=api.base_url, timeout=60) as client:
                while len([w for w in client.get("/ready").json()["workers"] if w["state"] == "ready"]) < 2:
                    time.sleep(0.5)
                one_round(client, 4, 0)  # warm-up
                one, two = [], []
                for r in range(args.rounds):
                    os.kill(workers[1].process.pid, signal.SIGSTOP)
                    one.append(args.jobs / one_round(client, args.jobs, 1000 * r))
                    os.kill(workers[1].process.pid, signal.SIGCONT)
                    two.append(args.jobs / one_round(client, args.jobs, 1000 * r + 500))
        finally:
            os.kill(workers[1].process.pid, signal.SIGCONT)
            api.stop()
            for worker in workers:
                worker.stop()
    a, b = statistics.median(one), statistics.median(two)
    print(f"{args.jobs} jobs of 64², 10 steps, tiny model, {args.rounds} rounds (median):")
    print(f"  1 worker : {a:.2f} jobs/s   (rounds: {', '.join(f'{x:.2f}' for x in one)})")
    print(f"  2 workers: {b:.2f} jobs/s   (rounds: {', '.join(f'{x:.2f}' for x in two)})")
    print(f"  2 workers / 1 worker: {b / a:.2f}x on {os.cpu_count()} CPU cores")


if __name__ == "__main__":
    main()
