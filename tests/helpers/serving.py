"""Test helpers: the real server as a subprocess, and a tiny HTTP server for inputs and webhooks."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

TESTS_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(model_cache: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a server or worker the tests start: offline, the tiny model's cache, loopback
    URLs allowed (the tests' own web servers), tests/ on the path (the doubles, e.g.
    GLM_IMAGE_SAFETY_CHECKER=helpers.doubles:FlagOddImages, are found there); `extra` last."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "GLM_IMAGE_CACHE_DIR": str(model_cache),
        "GLM_IMAGE_ALLOW_LOOPBACK_URLS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])),
        **extra,
    }


class ServerProcess:
    """`glm-image serve` in a subprocess (with its worker processes: one unless `args` say `--workers`);
    its output goes to a log file the tests can read. `start` returns once `/ready` says a worker has
    its model loaded."""

    def __init__(
        self,
        data_dir: Path,
        model_cache: Path,
        port: int | None = None,
        tls: tuple[Path, Path] | None = None,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir, self.model_cache, self.tls = data_dir, model_cache, tls
        self.port = port or free_port()
        self.extra_env, self.args = env or {}, args
        self.log_path = data_dir.parent / f"{data_dir.name}-server-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def self_signed(self) -> bool:
        return "--tls" in self.args

    @property
    def ca(self) -> Path:
        """The certificate clients trust with `--tls self-signed` (the server makes it on first start)."""
        return self.data_dir / "tls" / "ca.pem"

    def verify(self) -> ssl.SSLContext | bool:
        """What an httpx client of this server verifies with (the CA must exist: after `start`)."""
        return ssl.create_default_context(cafile=str(self.ca)) if self.self_signed else True

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls or self.self_signed else 'http'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> ServerProcess:
        command = [sys.executable, "-m", "glm_image_server.cli", "serve", "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir), "--model", "tiny", "--device", "cpu", *self.args]
        if "--workers" not in self.args:
            command += ["--workers", "1"]
        if self.tls:
            command += ["--ssl-certfile", str(self.tls[0]), "--ssl-keyfile", str(self.tls[1])]
        env = child_env(self.model_cache, {"GLM_IMAGE_WEBHOOK_RETRY_BASE_S": "0.3", **self.extra_env})
        log = self.log_path.open("a")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError, OSError):  # /health answers before a worker is ready
                if httpx.get(f"{self.base_url}/ready", timeout=2, verify=self.verify()).status_code == 200:
                    return self
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"server did not start in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


Route = Callable[[BaseHTTPRequestHandler], tuple[int, bytes, dict[str, str]] | None]


class WebServer:
    """A threaded HTTP server with routes the test sets: serves inputs, receives webhooks and PUTs."""

    def __init__(self) -> None:
        self.routes: dict[str, Route | tuple[int, bytes, dict[str, str]]] = {}
        self.received: list[tuple[str, str, bytes]] = []  # (method, path, body)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                self.body = body  # for routes that need the raw bytes with the headers
                outer.received.append((self.command, self.path, body))
                route = outer.routes.get(self.path.split("?")[0], (404, b"not found", {}))
                answer = route(self) if callable(route) else route
                if answer is None:  # the route wrote its own response
                    return
                status, data, headers = answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def dripping(interval_s: float, total_s: float) -> Route:
    """A route that answers one byte of its headers every `interval_s`, for at most `total_s`: a server
    that is never quite silent and never done."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        deadline = time.monotonic() + total_s
        for byte in b"HTTP/1.1 200 OK\r\n" + b"x-drip: yes\r\n" * 1000:
            if time.monotonic() > deadline:
                break
            try:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
            except OSError:
                break
            time.sleep(interval_s)
        handler.close_connection = True

    return route
