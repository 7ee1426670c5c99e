"""The `glm-image` command."""

from __future__ import annotations

import argparse
import base64
import ipaddress
import logging
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import ValidationError
from tqdm import tqdm

from . import __version__
from .config import Settings
from .core.request import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS_CLI,
    SIZE_PRESETS,
    GenerationRequest,
    InvalidRequest,
    parse_size,
    size_like,
)
from .core.results import Progress
from .datadir import DataDirBusy, DataDirLock

log = logging.getLogger("glm_image_server")

TINY_NOTICE = (
    "using the tiny random-weight demo model: it runs anywhere in seconds and its images are noise. "
    "For real images pass --model zai-org/GLM-Image (or a local directory) on a GPU."
)
STAGE_LABELS = {"ar": "AR tokens", "dit": "DiT steps", "vae": "VAE decode"}


MODEL_FLAGS = ("model", "device", "dtype", "cpu_offload", "ar_fast_path", "cache_dir")
SERVE_FLAGS = (
    "host",
    "port",
    "data_dir",
    "database_url",
    "storage_url",
    "public_url",
    "api_keys",
    "cors_origins",
    "allow_unauthenticated",
    "ssl_certfile",
    "ssl_keyfile",
    "tls",
    "workers",
    *MODEL_FLAGS,
)
WORKER_FLAGS = ("data_dir", "database_url", "storage_url", "worker_id", "torch_threads", *MODEL_FLAGS)
FLAG_NAMES = {"api_keys": "--api-key", "cors_origins": "--cors-origin"}  # repeatable: one per flag
# The internal request's fields as `generate` spells them on the command line.
REQUEST_FLAGS = {
    "num_inference_steps": "--steps",
    "guidance_scale": "--guidance",
    "num_images": "--num-images",
    "seed": "--seed",
    "width": "--size",
    "height": "--size",
    "size": "--size",
    "references": "--image",
    "image": "--image",
    "output": "--output",
    "prompt": "the prompt",
}


def flag_error(exc: InvalidRequest) -> str:
    """An invalid request in the words of the command line: `--steps: must be between 1 and 100...`."""
    name = exc.field.split("[")[0]
    return f"{REQUEST_FLAGS.get(name, '--' + name.replace('_', '-'))}: {exc.explanation}"


def _flag_type(annotation: Any) -> tuple[Any, dict]:
    """argparse options for a settings field's type."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
        annotation = args[0]
    if annotation is bool:
        return None, {"action": argparse.BooleanOptionalAction}
    if get_origin(annotation) is Literal:
        return None, {"choices": list(get_args(annotation))}
    if get_origin(annotation) is list:
        return None, {"action": "append", "metavar": "VALUE"}
    return annotation, {}


def add_settings_flags(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """One flag per Settings field, generated from it (type, help, default): they cannot drift apart.
    Flags not given leave the field to its environment variable or default."""
    defaults = Settings.model_fields
    for name in names:
        field = defaults[name]
        kind, options = _flag_type(field.annotation)
        default = field.get_default(call_default_factory=True)
        shown = ",".join(default) if isinstance(default, list) else default
        help_text = (
            f"{field.description or name.replace('_', ' ')} (env GLM_IMAGE_{name.upper()}; default {shown})"
        )
        if kind is not None:
            options["type"] = kind
        flag = FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
        parser.add_argument(
            flag, dest=name, default=argparse.SUPPRESS, help=help_text.replace("%", "%%"), **options
        )


def settings_from(args: argparse.Namespace, names: tuple[str, ...]) -> Settings:
    """Settings from the environment, overridden by the flags given."""
    return Settings(**{name: getattr(args, name) for name in names if hasattr(args, name)})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glm-image", description="Self-hosted GLM-Image inference.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser(
        "generate",
        help="generate images from a prompt (and up to 4 reference images) into files",
        description="Text-to-image, or an edit of up to 4 reference images, written to image files.",
    )
    gen.add_argument(
        "prompt", help="what to draw; put text to render in quotes, e.g. a sign that reads 'OPEN'"
    )
    gen.add_argument(
        "-i",
        "--image",
        action="append",
        default=[],
        metavar="REF",
        help="reference image for an edit (up to 4)",
    )
    gen.add_argument(
        "--size",
        default=None,
        help=f"WIDTHxHEIGHT (multiples of 32, 64..2048), 'auto', or one of {', '.join(SIZE_PRESETS)}. "
        "Default: square_hd (1024x1024); with reference images, auto: the first reference's aspect ratio "
        "at about one megapixel",
    )
    gen.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS_CLI,
        help="DiT denoising steps (default %(default)s, the model card's)",
    )
    gen.add_argument(
        "--guidance",
        type=float,
        default=DEFAULT_GUIDANCE,
        help="classifier-free guidance (default %(default)s)",
    )
    gen.add_argument(
        "--seed", type=int, default=None, help="random seed; image i uses seed+i (default: random)"
    )
    gen.add_argument(
        "-n", "--num-images", type=int, default=1, help="images to generate (default %(default)s)"
    )
    gen.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("out.png"),
        help="output file: .png, .jpg or .webp; with -n > 1, NAME-1.png, NAME-2.png, ... "
        "(default %(default)s)",
    )
    add_settings_flags(gen, MODEL_FLAGS)

    serve = commands.add_parser(
        "serve",
        help="run the HTTP server (fal.ai, Runware and OpenAI Images APIs) and its GPU worker processes",
        description="Serve GLM-Image over the fal.ai API (sync runs at /fal-ai/glm-image[/image-to-image], "
        "the queue under /queue/...), the Runware API (POST /v1 and a WebSocket on /v1) and the OpenAI "
        "Images API (/v1/images/generations, /v1/images/edits). The model runs in worker processes, one per "
        "GPU by default; the API process never loads it. fal's Python client speaks only HTTPS: serve with "
        "--tls self-signed (or --ssl-certfile/--ssl-keyfile) and set FAL_RUN_HOST=HOST:PORT, "
        "FAL_QUEUE_RUN_HOST=HOST:PORT/queue and SSL_CERT_FILE=<the ca.pem the server prints>; FAL_KEY may "
        "be any value when the server has no --api-key. fal's JavaScript client takes "
        "proxyUrl http(s)://HOST:PORT/api/fal/proxy (browsers on other origins: --cors-origin). Every "
        "client's setup: docs/api.md#clients. "
        "A playground page is at / and the API's own docs at /docs. One data directory serves one server. "
        "Every flag can also be set as GLM_IMAGE_<FLAG> in the environment; more settings are "
        "environment-only (docs/settings.md), among them the limits and deadlines of docs/operations.md.",
    )
    add_settings_flags(serve, SERVE_FLAGS)

    worker = commands.add_parser(
        "worker",
        help="run one worker process: it loads the model and runs jobs from the data directory's job store",
        description="One worker alone, against the job store in --data-dir or at --database-url (another "
        "box joins a fleet this way; `serve --workers 0` runs the API without workers). Stops cleanly on "
        "SIGTERM: its running jobs go back to the queue.",
    )
    add_settings_flags(worker, WORKER_FLAGS)
    return parser


def _output_paths(output: Path, count: int) -> list[Path]:
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i + 1}{output.suffix}") for i in range(count)]


OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def _request(args: argparse.Namespace, settings: Settings) -> tuple[GenerationRequest, tuple]:
    """The request and its decoded reference images."""
    from .media.inputs import read_image

    if args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InvalidRequest(
            "output", f"unsupported file type {args.output.suffix!r}", ", ".join(OUTPUT_SUFFIXES)
        )
    references = tuple(read_image(path, "image", settings.input_max_pixels) for path in args.image)
    size = args.size or ("auto" if references else "square_hd")
    if size == "auto":
        if not references:
            raise InvalidRequest("size", "'auto' needs a reference image", "WIDTHxHEIGHT or a preset")
        width, height = size_like(references[0])
    else:
        width, height = parse_size(size)
    seed = {"seed": args.seed} if args.seed is not None else {}
    request = GenerationRequest(
        prompt=args.prompt,
        width=width,
        height=height,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        num_images=args.num_images,
        # Locators must be URLs, data URIs or uploads (file:// is no locator): the files as data URIs.
        references=tuple(
            "data:;base64," + base64.b64encode(Path(path).read_bytes()).decode() for path in args.image
        ),
        **seed,
    )
    return request, references


class _ProgressBars:
    """A tqdm bar per stage, open from its first report until it completes (DiT and VAE interleave)."""

    def __init__(self) -> None:
        self._bars: dict[str, tqdm] = {}

    def __call__(self, progress: Progress) -> None:
        bar = self._bars.get(progress.stage)
        if bar is None:
            bar = self._bars[progress.stage] = tqdm(
                total=progress.total, desc=STAGE_LABELS[progress.stage], unit="", leave=True
            )
        bar.update(progress.done - bar.n)
        if bar.n >= bar.total:
            bar.close()
            del self._bars[progress.stage]

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


def generate(args: argparse.Namespace) -> int:
    settings = settings_from(args, MODEL_FLAGS)
    request, references = _request(args, settings)  # validate before the (slow) model load
    check_device(settings.device)
    if settings.model == "tiny":
        log.warning(TINY_NOTICE)
    from .engine.loader import load_engine

    engine = load_engine(settings)
    bars = _ProgressBars()
    try:
        (result,) = engine.generate([request], [references], on_progress=bars)
    finally:
        bars.close()
    paths = _output_paths(args.output, len(result.images))
    for path, image, seed in zip(paths, result.images, result.seeds, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        print(f"{path}  {image.width}x{image.height}  seed {seed}")
    t = result.timings
    print(f"AR {t.ar:.2f}s  DiT {t.dit:.2f}s  VAE {t.vae:.2f}s", file=sys.stderr)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _metrics_dir() -> Path:
    """One Prometheus directory for this server and its workers (set before prometheus_client is
    imported: it reads the variable then). Not in the data directory: its files are memory-mapped, and a
    full data disk must not take the server down with them."""
    directory = Path(tempfile.mkdtemp(prefix="glm-image-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


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


def check_tls(certfile: Path | None, keyfile: Path | None) -> None:
    """Load the certificate and key now, so a missing or wrong key is one clear line at startup."""
    import ssl

    if certfile is None:
        if keyfile is not None:
            raise UsageError("--ssl-keyfile needs --ssl-certfile (the certificate it belongs to)")
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except FileNotFoundError as exc:
        raise UsageError(f"TLS: no such file: {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        hint = (
            "pass its private key with --ssl-keyfile"
            if keyfile is None
            else "check that --ssl-keyfile is the key of --ssl-certfile"
        )
        raise UsageError(
            f"--ssl-certfile {certfile}: could not load a certificate and key ({exc}); {hint}"
        ) from None


class UsageError(Exception):
    """A command-line mistake, printed as one line (exit status 2)."""


def self_signed(settings: Settings) -> Settings:
    """`--tls self-signed`: the data directory's certificate (made on first start), served, and the
    path clients trust printed."""
    from .tls import ensure_self_signed, server_names

    files = ensure_self_signed(settings.tls_dir, server_names(settings.host, settings.public_url))
    print(
        f"glm-image: serving HTTPS with a self-signed certificate; clients trust {files.ca} "
        f"(fal's Python client: SSL_CERT_FILE={files.ca})",
        file=sys.stderr,
    )
    return settings.model_copy(update={"ssl_certfile": files.cert, "ssl_keyfile": files.key})


def serve(args: argparse.Namespace) -> int:
    settings = settings_from(args, SERVE_FLAGS)
    if settings.tls and (settings.ssl_certfile or settings.ssl_keyfile):
        raise UsageError("--tls self-signed makes its own certificate: drop --ssl-certfile/--ssl-keyfile")
    check_tls(settings.ssl_certfile, settings.ssl_keyfile)
    check_device(settings.device)
    if not settings.api_keys and not _is_loopback(settings.host) and not settings.allow_unauthenticated:
        print(
            f"glm-image: error: refusing to serve {settings.host} with no API keys: anyone who can reach it "
            "could use your GPU. Pass --api-key KEY, or --allow-unauthenticated if that is intended.",
            file=sys.stderr,
        )
        return 2
    lock = DataDirLock(settings.data_dir)
    try:
        lock.acquire()  # before anything reads the jobs, or a worker loads the model
        listener = _bind(settings.host, settings.port)  # before recovery requeues anything
    except (DataDirBusy, OSError) as exc:
        print(f"glm-image: error: {exc}", file=sys.stderr)
        return 2
    if settings.tls == "self-signed":
        settings = self_signed(settings)  # with the data directory locked: one server makes it
    if settings.model == "tiny":
        log.warning(TINY_NOTICE)
    metrics_dir = _metrics_dir() if settings.workers != 0 else None
    try:
        _run_uvicorn(settings, listener)
    finally:
        lock.release()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, *_rest, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        return socket.create_server(address[:2], family=family)
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _run_uvicorn(settings: Settings, listener: socket.socket) -> None:
    import uvicorn

    from .api.app import create_app
    from .api.connections import guarded_protocol

    config = uvicorn.Config(
        create_app(settings),
        http=guarded_protocol(settings),
        ssl_certfile=settings.ssl_certfile,
        ssl_keyfile=settings.ssl_keyfile,
        ws_max_size=settings.max_body_bytes,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        log_level="info",
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run(sockets=[listener])


def worker(args: argparse.Namespace) -> int:
    from .worker.main import run_worker

    run_worker(settings_from(args, WORKER_FLAGS))
    return 0


COMMANDS = {"generate": generate, "serve": serve, "worker": worker}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ValidationError as exc:
        first = exc.errors()[0]
        print(
            f"glm-image: error: --{str(first['loc'][0]).replace('_', '-')}: {first['msg']}", file=sys.stderr
        )
        return 2
    except InvalidRequest as exc:
        print(f"glm-image: error: {flag_error(exc)}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"glm-image: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # e.g. weights that cannot be loaded
        print(f"glm-image: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
