"""docs/api.md's Clients section, run as written: each client's setup (its `sh` block) and code against
`glm-image serve --tls self-signed --api-key ...`, with only the doc's placeholders (the address
127.0.0.1:8000, the key `your-api-key`, the default data directory's CA path) replaced by the test
server's. The Node code runs with tests/js's packages; the browser code is bundled with esbuild and runs
in Debian's chromium on a page of another origin (the server allows it with --cors-origin)."""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from helpers.images import decode
from helpers.node import JS_DIR
from helpers.serving import ServerProcess, free_port
from playwright.sync_api import sync_playwright

DOC = Path(__file__).parents[2] / "docs" / "api.md"
KEY = "docs-key-314"
CA_PLACEHOLDER = "~/.local/share/glm-image-server/tls/ca.pem"
RUNNERS = {
    "python": ("client.py", [sys.executable, "client.py"]),
    "js": ("client.mjs", ["node", "client.mjs"]),
}


def clients_section() -> dict[str, list[tuple[str, str]]]:
    """Each client's code blocks, (language, code) in order, by its anchor (`client-fal-python`...)."""
    text = DOC.read_text()
    section = text[text.index('<a id="clients"></a>') : text.index('<a id="fal"></a>')]
    parts = re.split(r'<a id="(client-[a-z-]+)"></a>', section)[1:]
    return {
        name: re.findall(r"```(sh|python|js)\n(.*?)```", body, flags=re.S)
        for name, body in zip(parts[::2], parts[1::2], strict=True)
    }


CLIENTS = clients_section()
PAGE_PORT = free_port()  # the browser page's origin, allowed by the server


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("docs-clients") / "data",
        model_cache,
        env={"GLM_IMAGE_ALLOW_LOOPBACK_URLS": "0"},  # the default: results come back from storage
        args=("--tls", "self-signed", "--api-key", KEY, "--cors-origin", f"http://127.0.0.1:{PAGE_PORT}"),
    ).start()
    yield server
    server.stop()


def as_written(code: str, server: ServerProcess) -> str:
    """The doc's code with its placeholders pointing at the test server."""
    code = code.replace(CA_PLACEHOLDER, str(server.ca)).replace("your-api-key", KEY)
    return code.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")


def workdir(tmp_path: Path) -> Path:
    """A folder whose scripts import tests/js's packages (node_modules is found by walking up)."""
    (tmp_path / "node_modules").symlink_to(JS_DIR / "node_modules")
    return tmp_path


def test_the_doc_names_every_client() -> None:
    assert set(CLIENTS) == {
        "client-fal-python",
        "client-fal-node",
        "client-fal-browser",
        "client-runware-python",
        "client-runware-js",
        "client-openai-python",
    }
    assert all(CLIENTS.values())


@pytest.mark.parametrize(
    "client", sorted(name for name in CLIENTS if name != "client-fal-browser"), ids=lambda name: name[7:]
)
def test_a_client_runs_as_the_doc_says(client: str, docs_server: ServerProcess, tmp_path: Path) -> None:
    setup = "\n".join(as_written(code, docs_server) for language, code in CLIENTS[client] if language == "sh")
    ((language, code),) = [block for block in CLIENTS[client] if block[0] != "sh"]
    name, command = RUNNERS[language]
    (workdir(tmp_path) / name).write_text(as_written(code, docs_server))
    path = os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"])
    run = subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{setup}\nexec {' '.join(command)}"],
        cwd=tmp_path,
        env={"PATH": path, "HOME": str(tmp_path)},  # nothing of the test session's environment
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr + docs_server.log()[-3000:]
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith(f"https://127.0.0.1:{docs_server.port}/files/"), run.stdout
    assert decode(docs_server_get(docs_server, last)).size[0] > 0
    if client == "client-openai-python":
        assert (tmp_path / "edited.png").read_bytes().startswith(b"\x89PNG")
    if client.startswith("client-fal"):
        assert re.search("Completed|COMPLETED", run.stdout)  # the queue updates the doc prints


def docs_server_get(server: ServerProcess, url: str) -> bytes:
    response = httpx.get(url, verify=server.verify(), timeout=30)
    assert response.status_code == 200
    return response.content


def spki_hash(certificate: Path) -> str:
    """What chromium's --ignore-certificate-errors-spki-list takes: it then trusts this key only."""
    public = x509.load_pem_x509_certificate(certificate.read_bytes()).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def test_the_browser_client_runs_on_a_page_of_another_origin(
    docs_server: ServerProcess, tmp_path: Path, chromium: Path
) -> None:
    ((_, code),) = CLIENTS["client-fal-browser"]
    page = workdir(tmp_path) / "page"
    page.mkdir()
    (tmp_path / "client.mjs").write_text(as_written(code, docs_server))
    esbuild = JS_DIR / "node_modules" / ".bin" / "esbuild"
    bundle = ["client.mjs", "--bundle", "--format=esm", "--outfile=page/bundle.js", "--log-level=warning"]
    subprocess.run([str(esbuild), *bundle], cwd=tmp_path, check=True, timeout=120)
    (page / "index.html").write_text('<img id="result"><script type="module" src="bundle.js"></script>')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(page))
    pages = http.server.ThreadingHTTPServer(("127.0.0.1", PAGE_PORT), handler)
    threading.Thread(target=pages.serve_forever, daemon=True).start()
    trusted = spki_hash(docs_server.data_dir / "tls" / "server.pem")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(chromium),
                args=["--no-sandbox", f"--ignore-certificate-errors-spki-list={trusted}"],
            )
            tab = browser.new_page()
            errors: list[str] = []
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            tab.goto(f"http://127.0.0.1:{PAGE_PORT}/index.html")
            tab.wait_for_function(
                "(prefix) => { const img = document.querySelector('img#result');"
                " return img.src.startsWith(prefix) && img.complete && img.naturalWidth > 0; }",
                arg=f"{docs_server.base_url}/files/",
                timeout=180_000,
            )
            browser.close()
        assert not errors
    finally:
        pages.shutdown()
        shutil.rmtree(page, ignore_errors=True)
