"""Status polling under load: 100 concurrent pollers of a fal status URL while a generation runs.

    apt-get install wrk        # the load generator: a Python client cannot produce this load
    .venv/bin/python bench/status_polling.py [--connections 100] [--seconds 10]

Tiny model; the server runs in a subprocess with a 1024², 100-step generation going. `wrk` (2 threads,
100 keep-alive connections, on the same 2 cores as the server and the generation) polls the status URL
with logs=0, the way fal_client does. Prints requests per second and p50/p99 latency (goal: >= 2,000
req/s with p99 <= 50 ms), and, in the same run, the same load on the status URL once the server is idle
and on /health during the generation, to tell the server's own ceiling from the generation's contention.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from _common import ServerProcess

from glm_image_server.config import Settings

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def wrk(url: str, connections: int, seconds: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms)."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def latency(percent: str) -> float:
        value, unit = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M).groups()
        return float(value) * UNITS[unit]

    rate = float(re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)[1])
    return rate, latency("50"), latency("99")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        parser.error("needs wrk: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", Settings().cache_dir).start()
        try:
            client = httpx.Client(base_url=server.base_url, timeout=60)
            body = {"prompt": "busy", "image_size": "square_hd", "num_inference_steps": 100}
            job = client.post("/queue/fal-ai/glm-image", json=body).json()
            while client.get(job["status_url"]).json()["status"] != "IN_PROGRESS":
                time.sleep(0.05)
            status_url = job["status_url"] + "?logs=0"
            print(f"wrk, 2 threads, {args.connections} connections, {args.seconds:g} s per line")
            results = [("status, generating", wrk(status_url, args.connections, args.seconds))]
            results.append(
                ("health, generating", wrk(f"{server.base_url}/health", args.connections, args.seconds))
            )
            still = client.get(job["status_url"]).json()["status"]
            client.put(job["cancel_url"])
            while client.get(job["status_url"]).status_code == 202:
                time.sleep(0.05)
            results.append(("status, idle", wrk(status_url, args.connections, args.seconds)))
            for label, (rate, p50, p99) in results:
                print(f"{label:<20} {rate:8.0f} req/s   p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")
            print(f"(the generation was {still} when the loaded runs ended)")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
