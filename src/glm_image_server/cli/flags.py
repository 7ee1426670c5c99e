"""What the command line and docs/settings.md say about Settings, generated from its fields: one flag per
setting a command takes (type, help, default), so a flag and its setting cannot drift apart; and the
checks of what those flags name that are best said as one line at startup (the device)."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from ..config import Settings

MODEL_FLAGS = ("model", "device", "dtype", "cpu_offload", "quantize", "offload", "ar_fast_path", "cache_dir")
STORE_FLAGS = ("data_dir", "database_url", "storage_url")
ACCESS_FLAGS = ("public_url", "api_keys", "cors_origins", "allow_unauthenticated")
TLS_FLAGS = ("ssl_certfile", "ssl_keyfile", "tls")
SERVE_FLAGS = ("host", "port", *STORE_FLAGS, *ACCESS_FLAGS, *TLS_FLAGS, "workers", *MODEL_FLAGS)
WORKER_FLAGS = (*STORE_FLAGS, "worker_id", "role", "torch_threads", *MODEL_FLAGS)
FLAG_NAMES = {"api_keys": "--api-key", "cors_origins": "--cors-origin"}  # repeatable: one per flag
TINY_NOTICE = (
    "using the tiny random-weight demo model: it runs anywhere in seconds and its images are noise. "
    "For real images pass --model zai-org/GLM-Image (or a local directory) on a GPU."
)
SETTINGS_HEADER = """# Settings

Every setting is an environment variable `GLM_IMAGE_<NAME>`; the ones with a flag can also be
given on the command line (`glm-image serve --help`). Generated from `config.py`; a test keeps
this page equal to it.

| variable | default | meaning |
| --- | --- | --- |"""


class UsageError(Exception):
    """A command-line mistake, printed as one line (exit status 2)."""


def _flag_type(annotation: Any) -> dict[str, Any]:
    """argparse options for a settings field's type."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
        annotation = args[0]
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if get_origin(annotation) is Literal:
        return {"choices": list(get_args(annotation))}
    if get_origin(annotation) is list:
        return {"action": "append", "metavar": "VALUE"}
    return {"type": annotation}


def add_settings_flags(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """A flag per Settings field in `names`; one not given leaves the field to its env variable or default."""
    for name in names:
        field = Settings.model_fields[name]
        default = field.get_default(call_default_factory=True)
        shown = ",".join(default) if isinstance(default, list) else default
        help_text = (
            f"{field.description or name.replace('_', ' ')} (env GLM_IMAGE_{name.upper()}; default {shown})"
        )
        flag, options = FLAG_NAMES.get(name, "--" + name.replace("_", "-")), _flag_type(field.annotation)
        parser.add_argument(
            flag, dest=name, default=argparse.SUPPRESS, help=help_text.replace("%", "%%"), **options
        )


def settings_from(args: argparse.Namespace, names: tuple[str, ...]) -> Settings:
    """Settings from the environment, overridden by the flags given."""
    return Settings(**{name: getattr(args, name) for name in names if hasattr(args, name)})


def check_device(device: str) -> None:
    """A device the installed torch cannot use, as one line instead of a traceback deep in the load."""
    if device not in ("cuda", "mps"):
        return
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else "a CUDA build, but no GPU is visible"
        raise UsageError(
            f"--device cuda: this torch ({torch.__version__}) is {build}. Use --device cpu (or auto), or "
            "install a CUDA build of torch into .venv"
        )
    if device == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: this machine or torch build has no Apple MPS; use --device cpu")


def settings_markdown() -> str:
    """docs/settings.md: every setting, its variable, default and meaning (a test keeps the file equal)."""
    lines = SETTINGS_HEADER.splitlines()
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, list):
            default = ",".join(default)
        elif isinstance(default, Path):
            default = str(default).replace(str(Path.home()), "~")
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `GLM_IMAGE_{name.upper()}` | `{default}` | {description} |")
    return "\n".join(lines) + "\n"
