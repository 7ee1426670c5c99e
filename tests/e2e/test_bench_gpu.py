"""bench/gpu.py must not rot: it runs end to end on the tiny model on the CPU (smallest settings) and prints
its table and ratios, and writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_run_prints_the_table_and_ratios(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GLM_IMAGE_CACHE_DIR": str(tmp_path / "cache")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    args = [
        "--tiny",
        "--steps",
        "1",
        "--sizes",
        "64",
        "--i2i-size",
        "64",
        "--batch-size",
        "64",
        "--concurrency",
        "2",
    ]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), *args, "--cpu-offload", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for expected in (
        "t2i 64²: engine/stock speed",
        "i2i 64²: engine/stock speed",
        "2 requests: engine batched vs stock sequential throughput",
        "ar_fast_path: AR stage",
        "batched_cfg: DiT stage",
        "vae_tiling at 64²",
        "offload: skipped",
    ):
        assert expected in proc.stdout, proc.stdout
    report = json.loads(out.read_text())
    assert {r["runner"] for r in report["runs"]} == {
        "engine",
        "stock",
        "plain",
        "ar_fast_path",
        "batched_cfg",
        "vae_tiling",
    }
    assert all(r["total_s"] > 0 for r in report["runs"])
