"""The `glm-image` command: `generate` (cli/generate.py), `serve` and `worker` (cli/serve.py), `plan`
(cli/plan.py), their flags generated from Settings (cli/flags.py), and every mistake said as one line with
an exit status."""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from .. import __version__
from ..core.request import InvalidRequest
from . import generate, plan, serve
from .flags import UsageError

COMMANDS = {"generate": generate.generate, "serve": serve.serve, "worker": serve.worker, "plan": plan.plan}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glm-image", description="Self-hosted GLM-Image inference.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    generate.add_parser(commands)
    serve.add_parsers(commands)
    plan.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ValidationError as exc:
        first = exc.errors()[0]
        said = first["msg"].removeprefix("Value error, ")
        message, status = f"--{str(first['loc'][0]).replace('_', '-')}: {said}", 2
    except InvalidRequest as exc:
        message, status = generate.flag_error(exc), 2
    except UsageError as exc:
        message, status = str(exc), 2
    except RuntimeError as exc:  # e.g. weights that cannot be loaded
        message, status = str(exc), 1
    except KeyboardInterrupt:
        return 130
    print(f"glm-image: error: {message}", file=sys.stderr)
    return status
