"""bench/gpu_quick.py must not rot before its one GPU run: on the tiny model on the CPU every section runs to
its end (or says why it cannot), the JSON and the markdown are written, and the time guard skips what does
not fit the budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GLM_IMAGE_CACHE_DIR": str(tmp_path / "cache")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_quick.py"), "--tiny", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "gpu_quick.md").read_text().startswith("# GPU quick run: tiny")
    return proc, json.loads((out / "gpu_quick.json").read_text())


def test_every_section_runs_on_the_tiny_model(tmp_path: Path) -> None:
    proc, report = run_bench(tmp_path)
    sections = report["sections"]
    assert list(sections) == ["0", "1", "3", "2", "4", "5", "6", "7"]
    for key, section in sections.items():
        if key == "6" and section["status"].startswith("skipped: torchao"):
            continue  # torchao is carried to the GPU as a wheel, not installed in the project's venv
        assert section["status"] == "done", (key, section)
    rows = {(key, r["case"], r["variant"]): r for key, s in sections.items() for r in s["rows"]}
    assert rows[("1", "weights (full size, meta device)", "AR language model")]["GiB"] > 15
    assert rows[("3", "AR 64² batch 1", "fast vs eager tokens")]["identical"] is True
    assert {v for k, _, v in rows if k == "2"} == {"engine", "stock"}
    assert {v for k, _, v in rows if k == "4"} == {"batch 1", "batch 4", "batch 8", "batch 16"}
    assert rows[("7", "t2i 128² 5 steps", "enable_model_cpu_offload")]["skipped"] == "needs a GPU"
    assert "## 7. offloading (done" in proc.stdout  # the table is printed last


def test_the_budget_skips_what_does_not_fit(tmp_path: Path) -> None:
    _, report = run_bench(tmp_path, "--budget-s", "1", "--sections", "0,4")
    assert report["sections"]["0"]["status"] == "done"  # it builds the model: it always runs
    assert report["sections"]["4"]["status"].startswith("skipped: budget")
    assert set(report["sections"]) == {"0", "4"}
