"""Status polling under load: 100 concurrent pollers of a fal status URL while a generation runs.

    .venv/bin/python bench/status_polling.py [--pollers 100] [--seconds 10]

Tiny model; the server runs in a subprocess with a 1024², 100-step generation going. The pollers are
asyncio tasks on keep-alive connections in this process (on the same cores as the server and the
generation). Prints requests per second and latency percentiles (goal: >= 2,000 req/s, p99 <= 50 ms),
and, side by side in the same run, the same load on /health (no store access) as a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from _server import ServerProcess

from glm_image_server.settings import Settings


async def load(url: str, pollers: int, seconds: float) -> tuple[int, list[float]]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=pollers, max_keepalive_connections=pollers)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        deadline = time.perf_counter() + seconds

        async def poller() -> None:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = await client.get(url)
                latencies.append(time.perf_counter() - start)
                assert response.status_code in (200, 202)

        await asyncio.gather(*(poller() for _ in range(pollers)))
    return len(latencies), latencies


def report(label: str, count: int, latencies: list[float], seconds: float) -> None:
    cuts = statistics.quantiles(latencies, n=100)
    p50, p99 = cuts[49] * 1000, cuts[98] * 1000
    print(f"{label:<8} {count / seconds:8.0f} req/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pollers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", Settings().cache_dir).start()
        try:
            client = httpx.Client(base_url=server.base_url, timeout=60)
            body = {"prompt": "busy", "image_size": "square_hd", "num_inference_steps": 100}
            job = client.post("/queue/fal-ai/glm-image", json=body).json()
            while client.get(job["status_url"]).json()["status"] != "IN_PROGRESS":
                time.sleep(0.05)
            print(f"{args.pollers} pollers for {args.seconds:g} s each, while a 1024² 100-step job runs")
            for label, url in (("status", job["status_url"]), ("health", f"{server.base_url}/health")):
                count, latencies = asyncio.run(load(url, args.pollers, args.seconds))
                report(label, count, latencies, args.seconds)
            still = client.get(job["status_url"]).json()["status"]
            print(f"(the generation was {still} at the end)")
            client.put(job["cancel_url"])
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
