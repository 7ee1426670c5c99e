"""A fleet on one machine for end-to-end tests: API processes (`serve --workers 0`) and worker processes
(`glm-image worker`) that share a PostgreSQL job store and an S3 bucket, as separate machines would."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from .serving import ServerProcess, child_env


def fal_body(label: str, seed: int, size: int, steps: int) -> dict:
    """A small fal request that a fleet test can tell apart by its prompt, safety check off (PNG)."""
    return {
        "prompt": f"a sign that reads '{label} {seed}'",
        "image_size": {"width": size, "height": size},
        "num_inference_steps": steps,
        "seed": seed,
        "output_format": "png",
        "enable_safety_checker": False,
    }


def fleet_env(database_url: str, bucket: str, s3_env: dict[str, str], **extra: str) -> dict[str, str]:
    return {
        "GLM_IMAGE_DATABASE_URL": database_url,
        "GLM_IMAGE_STORAGE_URL": f"s3://{bucket}/fleet",
        **s3_env,
        **extra,
    }


class WorkerProcess:
    """`glm-image worker` in a subprocess; its output goes to a log file."""

    def __init__(self, data_dir: Path, model_cache: Path, env: dict[str, str], worker_id: str) -> None:
        self.data_dir, self.model_cache, self.extra_env, self.worker_id = (
            data_dir,
            model_cache,
            env,
            worker_id,
        )
        self.log_path = data_dir.parent / f"{worker_id}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        command = [sys.executable, "-m", "glm_image_server.cli", "worker", "--data-dir", str(self.data_dir)]
        command += ["--model", "tiny", "--device", "cpu", "--worker-id", self.worker_id]
        env = child_env(self.model_cache, {"GLM_IMAGE_SAFETY_CHECKER": "none", **self.extra_env})
        log = self.log_path.open("a")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def api_process(data_dir: Path, model_cache: Path, env: dict[str, str]) -> ServerProcess:
    """An API replica with no workers of its own; `start()` returns once it sees a ready worker."""
    return ServerProcess(data_dir, model_cache, env=env, args=("--workers", "0"))
