"""`--tls self-signed`: a CA and a server certificate made once and kept in the data directory, trusted by
a strict TLS client for every name it lists; a changed host gets a new server certificate from the same
CA (clients keep trusting it); the private keys are the user's alone; the server's own fetcher trusts it."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers.images import png_bytes

from glm_image_server.cli import main
from glm_image_server.config import Settings
from glm_image_server.core.request import InvalidRequest
from glm_image_server.media.fetch import ImageFetcher
from glm_image_server.slices import FetchSettings
from glm_image_server.tls import ensure_self_signed, server_names


def handshake(cert: Path, key: Path, ca: Path, server_hostname: str) -> str:
    """One TLS handshake over loopback; returns the protocol the client agreed."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(ca))
    client_context.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default: no sloppy certificates
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def accept() -> None:
            connection, _ = listener.accept()
            try:
                with server_context.wrap_socket(connection, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        with (
            socket.create_connection(listener.getsockname(), timeout=10) as raw,
            client_context.wrap_socket(raw, server_hostname=server_hostname) as tls,
        ):
            version = tls.version() or ""
        thread.join(10)
    return version


def test_made_once_kept_and_trusted_for_every_name(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    files = ensure_self_signed(folder, server_names("127.0.0.1"))
    for name in ("127.0.0.1", "localhost", "::1"):
        assert name in server_names("127.0.0.1")
    for hostname in ("127.0.0.1", "localhost"):
        assert handshake(files.cert, files.key, files.ca, hostname).startswith("TLS")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(files.cert, files.key, files.ca, "elsewhere.example.com")
    for private in (files.key, files.ca_key):
        assert private.stat().st_mode & 0o077 == 0
    kept = {path: path.read_bytes() for path in (files.ca, files.cert, files.key)}
    again = ensure_self_signed(folder, server_names("127.0.0.1"))
    assert {path: path.read_bytes() for path in (again.ca, again.cert, again.key)} == kept


def test_a_new_host_gets_a_new_server_certificate_from_the_same_ca(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    first = ensure_self_signed(folder, server_names("127.0.0.1"))
    ca, cert = first.ca.read_bytes(), first.cert.read_bytes()
    names = server_names("10.20.30.40", "https://images.example.com/glm")
    assert {"10.20.30.40", "images.example.com", "localhost"} <= set(names)
    second = ensure_self_signed(folder, names)
    assert second.ca.read_bytes() == ca and second.cert.read_bytes() != cert
    assert handshake(second.cert, second.key, second.ca, "images.example.com").startswith("TLS")


def test_tls_self_signed_and_an_own_certificate_exclude_each_other(tmp_path: Path, capsys) -> None:
    code = main(
        ["serve", "--data-dir", str(tmp_path), "--tls", "self-signed", "--ssl-certfile", str(tmp_path / "c")]
    )
    assert code == 2
    assert "--tls self-signed makes its own certificate" in capsys.readouterr().err


def test_the_fetcher_trusts_the_servers_own_certificate(tmp_path: Path) -> None:
    """A URL of ours that was not recognised as one is fetched over HTTPS: with `tls: self-signed` the
    fetcher trusts the data directory's CA; without it, the same server's certificate is refused."""
    settings = Settings(data_dir=tmp_path, tls="self-signed", allow_loopback_urls=True)
    files = ensure_self_signed(settings.tls_dir, server_names("127.0.0.1"))
    body = png_bytes()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/ref.png"
    try:
        trusting = FetchSettings.from_settings(settings)
        assert asyncio.run(ImageFetcher(trusting).fetch_bytes(url, "image")) == body
        plain = replace(trusting, tls=None)
        with pytest.raises(InvalidRequest, match="CERTIFICATE_VERIFY_FAILED"):
            asyncio.run(ImageFetcher(plain).fetch_bytes(url, "image"))
    finally:
        server.shutdown()
        server.server_close()
