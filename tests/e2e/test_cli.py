"""`glm-image generate`, run as the installed console command: the engine, then the server's post stage
(safety check, text check and best of N, output format)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.doubles import ScoreByPixels
from helpers.serving import child_env
from PIL import Image

GLM_IMAGE = str(Path(sys.executable).with_name("glm-image"))
PROMPT = "a shop sign that reads 'OPEN'"
SMALL = ("--size", "64x64", "--steps", "2")


@pytest.fixture(scope="module")
def run(pipe, model_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """Runs glm-image in a scratch directory against the session's tiny model (built by `pipe`); `env`
    adds variables, e.g. a checker double from tests/helpers/doubles.py (tests/ is on its path)."""
    workdir = tmp_path_factory.mktemp("cli")

    def call(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [GLM_IMAGE, *args],
            cwd=workdir,
            env=child_env(model_cache, env or {}),
            capture_output=True,
            text=True,
            timeout=300,
        )

    call.workdir = workdir
    return call


def test_default_generate_writes_a_1024_png_with_progress(run) -> None:
    done = run("generate", PROMPT, "--model", "tiny", "-o", "out.png")
    assert done.returncode == 0, done.stderr
    with Image.open(run.workdir / "out.png") as image:
        image.verify()
    with Image.open(run.workdir / "out.png") as image:
        assert (image.format, image.size, image.mode) == ("PNG", (1024, 1024), "RGB")
    assert "tiny random-weight demo model" in done.stderr
    for bar in ("AR tokens: 100%", "1281/1281", "DiT steps: 100%", "50/50"):
        assert bar in done.stderr
    assert "out.png  1024x1024  seed " in done.stdout


def test_same_seed_gives_identical_bytes_other_seed_differs(run) -> None:
    outputs = {}
    small = ("--size", "256x256", "--steps", "4")  # the default size has its own test above
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        done = run("generate", PROMPT, *small, "--seed", seed, "-o", f"{name}.png")
        assert done.returncode == 0, done.stderr
        outputs[name] = (run.workdir / f"{name}.png").read_bytes()
    assert outputs["a"] == outputs["b"]
    assert outputs["a"] != outputs["c"]


def test_edit_with_references_and_several_images(run) -> None:
    Image.new("RGB", (1000, 750), (200, 30, 30)).save(run.workdir / "ref.jpg")
    Image.new("LA", (300, 200)).save(run.workdir / "ref.png")
    refs = ["-i", "ref.jpg", "-i", "ref.png"]
    done = run("generate", "make it blue", *refs, "--steps", "2", "--seed", "9", "-n", "2", "-o", "edit.webp")
    assert done.returncode == 0, done.stderr
    for i, seed in ((1, 9), (2, 10)):
        with Image.open(run.workdir / f"edit-{i}.webp") as image:
            assert image.format == "WEBP" and image.size == (1184, 896)  # the first reference's 4:3
        assert f"edit-{i}.webp  1184x896  seed {seed}" in done.stdout


def test_missing_weights_exit_1_with_a_hint(run) -> None:
    done = run("generate", PROMPT, "--model", "/nonexistent/GLM-Image")
    assert done.returncode == 1
    assert "could not load GLM-Image from '/nonexistent/GLM-Image'" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_refuses_an_open_public_bind(run) -> None:
    done = run("serve", "--host", "0.0.0.0", "--port", "1")
    assert done.returncode == 2
    assert "refusing to serve 0.0.0.0 with no API keys" in done.stderr and "--api-key" in done.stderr


def test_serve_help_names_the_fal_hosts(run) -> None:
    done = run("serve", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "FAL_QUEUE_RUN_HOST=HOST:PORT/queue" in text
    assert "SSL_CERT_FILE=" in text and "FAL_KEY may be any value" in text  # the https setup, in words
    assert "--tls {self-signed}" in text


def is_black(path: Path) -> bool:
    with Image.open(path) as image:
        return int(np.asarray(image.convert("RGB")).max()) <= 8  # JPEG of pure black stays near 0


def test_the_safety_check_runs_as_on_the_server(run) -> None:
    """On by default (the server's safety_default): a flagged image is blacked out and said to be; --format
    names the files; --no-safety-check leaves every image as made."""
    flag_odd = {"GLM_IMAGE_SAFETY_CHECKER": "helpers.doubles:FlagOddImages"}
    done = run("generate", PROMPT, *SMALL, "--seed", "4", "-n", "2", "--format", "jpeg", env=flag_odd)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == ["out-1.jpg  64x64  seed 4", "out-2.jpg  64x64  seed 5  NSFW: replaced with black"]
    assert "Safety checker flagged 1 of 2 image(s)" in done.stderr
    with Image.open(run.workdir / "out-1.jpg") as image:
        assert image.format == "JPEG"
    assert not is_black(run.workdir / "out-1.jpg") and is_black(run.workdir / "out-2.jpg")

    unchecked = ("-n", "2", "-o", "free.webp", "--no-safety-check")
    done = run("generate", PROMPT, *SMALL, "--seed", "4", *unchecked, env=flag_odd)
    assert done.returncode == 0, done.stderr
    assert "NSFW" not in done.stdout and "Safety checker" not in done.stderr
    assert not is_black(run.workdir / "free-2.webp")


def test_the_text_check_keeps_the_best_candidate(run) -> None:
    """--candidates 3: three seeds made, each read back, the best kept and written; its score printed."""
    scorer = {"GLM_IMAGE_TEXT_CHECKER": "helpers.doubles:ScoreByPixels"}
    args = ("--seed", "3", "--candidates", "3", "--no-safety-check", "-o", "best.png")
    done = run("generate", PROMPT, *SMALL, *args, env=scorer)
    assert done.returncode == 0, done.stderr
    read_back = re.findall(r"seed (\d+): score ([0-9.]+)", done.stderr)  # the post stage's log line
    scores = {int(seed): float(score) for seed, score in read_back}
    assert set(scores) == {3, 4, 5}
    (line,) = done.stdout.splitlines()
    kept = int(re.match(r"best.png  64x64  seed (\d+)  text score ", line).group(1))
    assert scores[kept] == max(scores.values()) and f"text score {scores[kept]:.2f} (" in line
    with Image.open(run.workdir / "best.png") as image:
        assert ScoreByPixels.score(image) == pytest.approx(scores[kept], abs=0.005)

    checked = run("generate", PROMPT, *SMALL, "--seed", "3", "--text-check", "-o", "one.png", env=scorer)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"one.png  64x64  seed 3  text score {scores[3]:.2f} (")


def test_the_cli_leaves_metrics_to_serve() -> None:
    """`serve` points prometheus_client at its processes' directory before importing it: the command's
    modules must not import it first."""
    code = "import sys, glm_image_server.cli; sys.exit('prometheus_client' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
