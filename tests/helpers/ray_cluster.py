"""A local Ray cluster for the fleet's tests, started with the commands of docs/deploy.md on loopback:
`ray start --head`, `serve start`, `serve run glm_image_server.fleet.app:build ...`. The head runs in its
own process group (every Ray process descends from it), and that group alone is ended afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from .serving import TESTS_DIR, free_port

BIN = Path(sys.executable).parent


class RayFleet:
    def __init__(self, env: dict[str, str], log_dir: Path, num_cpus: int = 4) -> None:
        self.port, self.http_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.base_url = f"http://127.0.0.1:{self.http_port}"
        self.temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths are limited
        self.num_cpus, self.log_path = num_cpus, log_dir / "ray.log"
        self.env = {
            **os.environ,
            **env,
            "RAY_ADDRESS": self.address,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])),
        }
        self.head: subprocess.Popen | None = None

    def _run(self, *command: str, timeout: float = 180) -> None:
        with self.log_path.open("a") as log:
            subprocess.run(
                [str(BIN / command[0]), *command[1:]],
                env=self.env,
                stdout=log,
                stderr=log,
                check=True,
                timeout=timeout,
            )

    def start(self, *build_args: str, timeout: float = 300) -> RayFleet:
        head = [
            "ray",
            "start",
            "--head",
            "--block",
            "--port",
            str(self.port),
            "--node-ip-address",
            "127.0.0.1",
        ]
        head += ["--num-cpus", str(self.num_cpus), "--num-gpus", "0", "--include-dashboard", "false"]
        head += ["--disable-usage-stats", "--temp-dir", self.temp_dir]
        with self.log_path.open("a") as log:
            self.head = subprocess.Popen(
                [str(BIN / head[0]), *head[1:]], env=self.env, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._run(
                    "serve",
                    "start",
                    "--http-host",
                    "127.0.0.1",
                    "--http-port",
                    str(self.http_port),
                    timeout=120,
                )
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline or self.head.poll() is not None:
                    raise
                time.sleep(1)
        self.deploy(*build_args)
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base_url}/ready", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the fleet was not ready in {timeout} s:\n{self.log()}")

    def deploy(self, *build_args: str) -> None:
        """`serve run --non-blocking glm_image_server.fleet.app:build ...`: (re)deploys the application."""
        self._run("serve", "run", "--non-blocking", "glm_image_server.fleet.app:build", *build_args)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.head is not None and self.head.poll() is None:
            os.killpg(self.head.pid, signal.SIGTERM)
            try:
                # `ray start --block` has not once exited by itself within 30 s of a SIGTERM here: a
                # short grace, then the whole process group goes.
                self.head.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.head.pid, signal.SIGKILL)
                self.head.wait(10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
