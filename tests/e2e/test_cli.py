"""`glm-image generate`, run as the installed console command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

GLM_IMAGE = str(Path(sys.executable).with_name("glm-image"))
PROMPT = "a shop sign that reads 'OPEN'"


@pytest.fixture(scope="module")
def run(pipe, model_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """Runs glm-image in a scratch directory against the session's tiny model (built by `pipe`)."""
    workdir = tmp_path_factory.mktemp("cli")
    env = {**os.environ, "GLM_IMAGE_CACHE_DIR": str(model_cache), "HF_HUB_OFFLINE": "1"}

    def call(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [GLM_IMAGE, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=300
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
