"""`glm-image serve` (the API process and its worker processes) and `glm-image worker` (one worker alone):
their flags, and the startup checks that turn a bad certificate, an open bind or a busy data directory
into one line before anything runs."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from types import FrameType

from ..config import Settings
from ..datadir import DataDirBusy, DataDirLock
from ..worker.plan import api_only
from .flags import (
    SERVE_FLAGS,
    TINY_NOTICE,
    WORKER_FLAGS,
    UsageError,
    add_settings_flags,
    check_device,
    settings_from,
)
from .plan import build as build_plan

log = logging.getLogger("glm_image_server")

SERVE_DESCRIPTION = (
    "Serve GLM-Image over the fal.ai API (sync runs at /fal-ai/glm-image[/image-to-image], "
    "the queue under /queue/...), the Runware API (POST /v1 and a WebSocket on /v1) and the OpenAI "
    "Images API (/v1/images/generations, /v1/images/edits). The model runs in worker processes, planned "
    "from the visible GPUs' memory by default (`glm-image plan` prints the plan; --workers sets one); "
    "the API process never loads it. fal's Python client speaks only HTTPS: serve with "
    "--tls self-signed (or --ssl-certfile/--ssl-keyfile) and set FAL_RUN_HOST=HOST:PORT, "
    "FAL_QUEUE_RUN_HOST=HOST:PORT/queue and SSL_CERT_FILE=<the ca.pem the server prints>; FAL_KEY may "
    "be any value when the server has no --api-key. fal's JavaScript client takes "
    "proxyUrl http(s)://HOST:PORT/api/fal/proxy (browsers on other origins: --cors-origin). Every "
    "client's setup: docs/api.md#clients. "
    "A playground page is at / and the API's own docs at /docs. One data directory serves one server. "
    "Every flag can also be set as GLM_IMAGE_<FLAG> in the environment; more settings are "
    "environment-only (docs/settings.md), among them the limits and deadlines of docs/operations.md."
)


def add_parsers(commands: argparse._SubParsersAction) -> None:
    serve_parser = commands.add_parser(
        "serve",
        help="run the HTTP server (fal.ai, Runware and OpenAI Images APIs) and its GPU worker processes",
        description=SERVE_DESCRIPTION,
    )
    add_settings_flags(serve_parser, SERVE_FLAGS)
    worker_parser = commands.add_parser(
        "worker",
        help="run one worker process: it loads the model and runs jobs from the data directory's job store",
        description="One worker alone, against the job store in --data-dir or at --database-url (another "
        "box joins a fleet this way; `serve --workers 0` runs the API without workers). Stops cleanly on "
        "SIGTERM: its running jobs go back to the queue.",
    )
    add_settings_flags(worker_parser, WORKER_FLAGS)


def _is_loopback(host: str) -> bool:
    with contextlib.suppress(ValueError):
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    return False


def _metrics_dir() -> Path:
    """One Prometheus directory for this server and its workers, set before prometheus_client is imported.
    Not in the data directory: its files are memory-mapped, and a full data disk must not take us down."""
    directory = Path(tempfile.mkdtemp(prefix="glm-image-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


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
        hint = "pass its private key with --ssl-keyfile"
        if keyfile is not None:
            hint = "check that --ssl-keyfile is the key of --ssl-certfile"
        raise UsageError(
            f"--ssl-certfile {certfile}: could not load a certificate and key ({exc}); {hint}"
        ) from None


def self_signed(settings: Settings) -> Settings:
    """`--tls self-signed`: the data directory's certificate (made on first start), and what to trust."""
    from ..tls import ensure_self_signed, server_names

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
    if not api_only(settings.workers):
        build_plan(settings, None, real_model=False)  # a GPU the plan names that is not visible: one line
    if not settings.api_keys and not _is_loopback(settings.host) and not settings.allow_unauthenticated:
        raise UsageError(
            f"refusing to serve {settings.host} with no API keys: anyone who can reach it "
            "could use your GPU. Pass --api-key KEY, or --allow-unauthenticated if that is intended."
        )
    lock = DataDirLock(settings.data_dir, needed=owns_data_dir(settings))
    try:
        lock.acquire()  # before anything reads the jobs, or a worker loads the model
        listener = _bind(settings.host, settings.port)  # before recovery requeues anything
    except (DataDirBusy, OSError) as exc:
        raise UsageError(str(exc)) from None
    if settings.tls == "self-signed":
        settings = self_signed(settings)  # with the data directory locked: one server makes it
    if settings.model == "tiny":
        log.warning(TINY_NOTICE)
    metrics_dir = _metrics_dir() if not api_only(settings.workers) else None
    try:
        _run_uvicorn(settings, listener)
    finally:
        lock.release()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def owns_data_dir(settings: Settings) -> bool:
    """Whether our data directory holds what another server must not touch: a SQLite job store, local
    results, a self-signed certificate, or workers of its own (ids w0... are alike on every server). A
    fleet API (PostgreSQL and S3, `--workers 0`) holds none: several may share the default directory."""
    database, storage = settings.database_url or "", settings.storage_url or ""
    shared = database.startswith("postgres") and storage.startswith("s3://")
    return not shared or settings.tls == "self-signed" or not api_only(settings.workers)


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, *_rest, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        return socket.create_server(address[:2], family=family)
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


DRAIN_SLACK_S = 3.0  # past the drain, for the 503s to be written before uvicorn cancels requests


def _run_uvicorn(settings: Settings, listener: socket.socket) -> None:
    import uvicorn

    from ..api.app import create_app
    from ..api.connections import guarded_protocol
    from ..serving.admission import LimitsSettings

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        http=guarded_protocol(LimitsSettings.from_settings(settings)),
        ssl_certfile=settings.ssl_certfile,
        ssl_keyfile=settings.ssl_keyfile,
        ws_max_size=settings.max_body_bytes,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        log_level="info",
        timeout_graceful_shutdown=settings.shutdown_drain_s + DRAIN_SLACK_S,
    )

    class DrainingServer(uvicorn.Server):
        """On SIGTERM or Ctrl-C the job service drains first (waiting sync requests get their results or,
        after `shutdown_drain_s`, a 503 in their format), then uvicorn ends what is left."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if (services := getattr(app.state, "services", None)) is not None:
                services.jobs.drain(settings.shutdown_drain_s)
            super().handle_exit(sig, frame)

    DrainingServer(config).run(sockets=[listener])


def worker(args: argparse.Namespace) -> int:
    from ..worker.main import run_worker

    run_worker(settings_from(args, WORKER_FLAGS))
    return 0
