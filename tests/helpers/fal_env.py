"""fal-client's environment, set on import: fal-client reads its hosts when it is imported and forces
https, so this module gives it a TLS server it trusts on a port chosen now. Import it (tests/e2e's
conftest does) before anything imports fal_client; the fal_server fixture serves exactly there."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import trustme

from .keys import FAL_KEY
from .serving import free_port

TLS_DIR = Path(tempfile.mkdtemp(prefix="glm-image-tls-"))
atexit.register(shutil.rmtree, TLS_DIR, ignore_errors=True)  # it holds a private key: never leave it
_CA = trustme.CA()
_CA.cert_pem.write_to_path(str(TLS_DIR / "ca.pem"))
_CA.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
    str(TLS_DIR / "server.pem")
)
SERVER_PEM = TLS_DIR / "server.pem"  # certificate chain and key in one file
FAL_PORT = free_port()

os.environ["FAL_RUN_HOST"] = f"127.0.0.1:{FAL_PORT}"
os.environ["FAL_QUEUE_RUN_HOST"] = f"127.0.0.1:{FAL_PORT}/queue"
os.environ["SSL_CERT_FILE"] = str(TLS_DIR / "ca.pem")
os.environ["FAL_KEY"] = FAL_KEY
