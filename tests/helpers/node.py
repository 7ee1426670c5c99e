"""Running the JavaScript clients users have (tests/js: @fal-ai/client, @runware/sdk-js, installed from
the npm registry by scripts/test) as Node scripts against a test server, bounded in time."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

JS_DIR = Path(__file__).parents[1] / "js"


def run_node(script: str, env: dict[str, str], timeout: float = 180) -> list[dict]:
    """Run tests/js/`script` with `env` added; the JSON objects it printed, one per stdout line.
    AssertionError with its output when it fails or overruns `timeout` seconds."""
    try:
        run = subprocess.run(
            ["node", str(JS_DIR / script)],
            cwd=JS_DIR,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{script} ran past {timeout} s: {exc.stdout}\n{exc.stderr}") from exc
    assert run.returncode == 0, f"{script} exited {run.returncode}:\n{run.stdout}\n{run.stderr}"
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
