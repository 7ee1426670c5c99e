"""The command line's mistakes as one clear line naming the flag, never a traceback."""

from __future__ import annotations

import pytest
import torch
import trustme
from PIL import Image

from glm_image_server.cli import build_parser, generate, main
from glm_image_server.cli.serve import owns_data_dir
from glm_image_server.config import Settings


def error_line(capsys, argv: list[str], status: int = 2) -> str:
    assert main(argv) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--steps", "0"], "--steps: must be between 1 and 100"),
        (["--guidance", "0.5"], "--guidance: must be between 1 and 50"),  # the APIs' minimum, 1
        (["-n", "0"], "--num-images: must be between 1 and 20"),
        (["--size", "100x64"], "--size: must be a multiple of 32"),
        (["--size", "1000x1000"], "--size: must be a multiple of 32, got 1000 (allowed: multiples of 32"),
        (
            ["--size", "square_xl"],
            "--size: unknown size 'square_xl' (allowed: WIDTHxHEIGHT or one of square_hd",
        ),
        (["-i", "r.png"] * 5, "--image: got 5 images (allowed: 0..4 images)"),
        (["-i", "missing.png"], "--image: cannot read missing.png"),
        (["-o", "out.gif"], "--output: unsupported file type '.gif'"),
        (["-o", "out.png", "--format", "jpeg"], "--format: jpeg does not match out.png (allowed: png)"),
        (["--candidates", "9"], "--candidates: must be between 1 and 8"),
    ],
)
def test_generate_names_the_flag(capsys, tmp_path, monkeypatch, flags: list[str], expected: str) -> None:
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 64)).save(tmp_path / "r.png")
    line = error_line(capsys, ["generate", "x", *flags])
    assert line.startswith(f"glm-image: error: {expected}"), line


def test_an_empty_prompt_is_refused(capsys) -> None:
    assert "the prompt: must be a non-empty string" in error_line(capsys, ["generate", "  "])


def test_cuda_on_a_torch_without_it(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = error_line(capsys, ["generate", "x", "--device", "cuda", "-o", str(tmp_path / "a.png")])
    assert "--device cuda: this torch" in line and "--device cpu" in line


def test_tls_certificate_without_its_key(capsys, tmp_path) -> None:
    cert = trustme.CA().issue_cert("127.0.0.1")
    cert_only = tmp_path / "cert.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_only))
    line = error_line(capsys, ["serve", "--ssl-certfile", str(cert_only), "--data-dir", str(tmp_path)])
    assert "could not load a certificate and key" in line and "--ssl-keyfile" in line
    line = error_line(capsys, ["serve", "--ssl-keyfile", str(cert_only), "--data-dir", str(tmp_path)])
    assert "--ssl-keyfile needs --ssl-certfile" in line
    missing = tmp_path / "nope.pem"
    line = error_line(capsys, ["serve", "--ssl-certfile", str(missing), "--data-dir", str(tmp_path)])
    assert "no such file" in line


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], ("out.png", "png")),
        (["--format", "jpeg"], ("out.jpg", "jpeg")),
        (["-o", "a.JPEG"], ("a.JPEG", "jpeg")),
    ],
)
def test_the_output_file_and_its_format(flags: list[str], expected: tuple[str, str]) -> None:
    path, fmt = generate.output_file(build_parser().parse_args(["generate", "x", *flags]))
    assert (str(path), fmt) == expected


def test_generate_builds_the_request_once_as_the_apis_do(tmp_path) -> None:
    """Core's default seed (none chosen here), the server's safety default, the APIs' best-of-N."""
    args = build_parser().parse_args(["generate", "a sign that reads 'OPEN'", "-n", "2", "--candidates", "3"])
    settings = Settings(data_dir=tmp_path, safety_default=False)
    request, output, references = generate.build_request(args, settings, "webp")
    assert (request.num_images, output.keep_best, output.text_check) == (3, 2, True)
    assert (output.format, output.safety_check, references) == ("webp", False, ())
    again, _, _ = generate.build_request(args, settings, "webp")
    assert again.seed != request.seed  # random per request, fixed on it
    checked = build_parser().parse_args(["generate", "x", "--safety-check"])
    assert generate.build_request(checked, settings, "png")[1].safety_check is True


@pytest.mark.parametrize(
    ("settings", "locked"),
    [
        ({}, True),  # SQLite and local files
        ({"database_url": "postgresql://db/jobs"}, True),  # local files
        ({"storage_url": "s3://bucket/prefix"}, True),  # a SQLite store
        ({"database_url": "postgresql://db/jobs", "storage_url": "s3://bucket/prefix", "workers": 0}, False),
        ({"database_url": "postgresql://db/jobs", "storage_url": "s3://bucket/prefix", "workers": 1}, True),
        ({"database_url": "sqlite:////srv/jobs.sqlite3", "storage_url": "s3://b/p", "workers": 0}, True),
        (
            {
                "database_url": "postgresql://db/jobs",
                "storage_url": "s3://b/p",
                "workers": 0,
                "tls": "self-signed",
            },
            True,
        ),
    ],
)
def test_the_data_directory_is_locked_only_where_it_holds_something(settings: dict, locked: bool) -> None:
    assert owns_data_dir(Settings(**settings)) is locked
