"""The CLI's flags are generated from Settings: every flag is a setting, is documented with its
environment variable, parses into Settings over the environment, and is validated like the setting. And
the slices components receive are cut from Settings, the same in a worker process as in its parent."""

from __future__ import annotations

import dataclasses
import os

import pytest

from glm_image_server import cli
from glm_image_server.cli import flags
from glm_image_server.config import Settings
from glm_image_server.serving.admission import LimitsSettings
from glm_image_server.serving.jobs import ServingSettings
from glm_image_server.slices import (
    DeliverySettings,
    EngineSettings,
    FetchSettings,
    PostSettings,
    PricingSettings,
    Slice,
    WorkerSettings,
)
from glm_image_server.worker.supervisor import settings_env

SLICES = (
    EngineSettings,
    WorkerSettings,
    FetchSettings,
    PostSettings,
    PricingSettings,
    DeliverySettings,
    LimitsSettings,
    ServingSettings,
)

ALL_FLAGS = sorted(set(flags.SERVE_FLAGS) | set(flags.WORKER_FLAGS) | set(flags.MODEL_FLAGS))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("GLM_IMAGE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GLM_IMAGE_DATA_DIR", str(tmp_path))  # nothing touches the real home


def flag(name: str) -> str:
    return flags.FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def help_text(capsys, command: str) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("name", ALL_FLAGS)
def test_every_flag_is_a_setting(name):
    assert name in Settings.model_fields


def test_the_flag_lists_hold_no_duplicates():
    for names in (flags.SERVE_FLAGS, flags.WORKER_FLAGS, flags.MODEL_FLAGS):
        assert len(set(names)) == len(names)
    assert set(flags.MODEL_FLAGS) <= set(flags.SERVE_FLAGS)
    assert set(flags.MODEL_FLAGS) <= set(flags.WORKER_FLAGS)


@pytest.mark.parametrize(
    ("command", "names"),
    [("serve", flags.SERVE_FLAGS), ("worker", flags.WORKER_FLAGS), ("generate", flags.MODEL_FLAGS)],
)
def test_help_lists_each_flag_with_its_env_var(capsys, command, names):
    text = help_text(capsys, command)
    for name in names:
        assert flag(name) in text, name
        assert f"(env GLM_IMAGE_{name.upper()}; default" in text, name


def test_help_shows_defaults_and_descriptions(capsys):
    text = help_text(capsys, "serve")
    assert "(env GLM_IMAGE_PORT; default 8000)" in text
    assert "(env GLM_IMAGE_HOST; default 127.0.0.1)" in text
    assert "--no-cpu-offload" in text
    assert Settings.model_fields["cpu_offload"].description in text


def parse(argv: list[str], names: tuple[str, ...]) -> Settings:
    return flags.settings_from(cli.build_parser().parse_args(argv), names)


def test_serve_flags_override_the_environment(monkeypatch):
    monkeypatch.setenv("GLM_IMAGE_PORT", "9123")
    monkeypatch.setenv("GLM_IMAGE_CPU_OFFLOAD", "true")
    monkeypatch.setenv("GLM_IMAGE_MODEL", "some/model")
    settings = parse(
        ["serve", "--workers", "2", "--api-key", "a", "--api-key", "b", "--no-cpu-offload"], flags.SERVE_FLAGS
    )
    assert settings.workers == "2"  # a plan: the count as text
    assert settings.api_keys == ["a", "b"]
    assert settings.cpu_offload is False  # the flag beats the environment
    assert settings.port == 9123  # no --port: the environment's
    assert settings.model == "some/model"
    assert settings.host == "127.0.0.1"  # neither: the default
    assert settings.device == "auto"
    assert settings.workers != Settings().workers


def test_a_flag_beats_its_env_var(monkeypatch):
    monkeypatch.setenv("GLM_IMAGE_PORT", "9123")
    monkeypatch.setenv("GLM_IMAGE_API_KEYS", "x, y")
    assert parse(["serve", "--port", "9200"], flags.SERVE_FLAGS).port == 9200
    assert parse(["serve"], flags.SERVE_FLAGS).api_keys == ["x", "y"]
    assert parse(["serve", "--api-key", "z"], flags.SERVE_FLAGS).api_keys == ["z"]


def test_flags_of_each_type(tmp_path):
    settings = parse(
        [
            "serve",
            "--cpu-offload",
            "--device",
            "cpu",
            "--data-dir",
            str(tmp_path / "data"),
            "--public-url",
            "https://example.com",
            "--allow-unauthenticated",
        ],
        flags.SERVE_FLAGS,
    )
    assert settings.cpu_offload is True
    assert settings.device == "cpu"
    assert settings.data_dir == tmp_path / "data"
    assert settings.public_url == "https://example.com"
    assert settings.allow_unauthenticated is True


def test_worker_flags():
    settings = parse(["worker", "--worker-id", "gpu-3", "--torch-threads", "4"], flags.WORKER_FLAGS)
    assert (settings.worker_id, settings.torch_threads) == ("gpu-3", 4)


def test_a_flag_of_another_command_is_refused(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(["worker", "--port", "1"])
    assert exited.value.code == 2
    assert "--port" in capsys.readouterr().err


def test_a_choice_outside_the_literal_is_refused(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--device", "tpu"])
    assert exited.value.code == 2
    assert "--device" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["serve", "--workers", "-1"], "--workers"),
        (["worker", "--torch-threads", "0"], "--torch-threads"),
    ],
)
def test_an_invalid_value_returns_2_naming_the_flag(capsys, argv, named):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("glm-image: error: ")
    assert named in err
    assert "greater than or equal" in err


def test_an_invalid_env_value_is_reported(capsys, monkeypatch):
    monkeypatch.setenv("GLM_IMAGE_WORKERS", "-3")
    assert cli.main(["serve"]) == 2
    assert "--workers" in capsys.readouterr().err


def test_every_slice_is_declared_here():
    assert set(Slice.__subclasses__()) == set(SLICES)


@pytest.mark.parametrize("kind", SLICES)
def test_a_slice_holds_its_settings_frozen(kind):
    settings = Settings(safety_labels=["A", "B"], lease_s=7, fetch_max_bytes=9, price_per_megapixel=0.2)
    part = kind.from_settings(settings)
    for field in dataclasses.fields(part):
        expected = getattr(settings, field.name)
        assert getattr(part, field.name) == (tuple(expected) if isinstance(expected, list) else expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(part, dataclasses.fields(part)[0].name, None)


def test_a_worker_process_reads_the_same_slices_from_its_environment(monkeypatch, tmp_path):
    """What the supervisor hands a worker (settings_env) gives the worker the parent's slices."""
    parent = Settings(
        data_dir=tmp_path,
        model="some/model",
        cpu_offload=True,
        ar_fast_path=False,
        lease_s=7.5,
        safety_labels=["A", "B"],
        allow_private_urls=True,
        pricing="gpu_second",
        webhook_max_attempts=3,
    )
    for name, value in settings_env(parent).items():
        monkeypatch.setenv(name, value)
    child = Settings()
    for kind in SLICES:
        assert kind.from_settings(child) == kind.from_settings(parent), kind.__name__
