"""The server's webhook signing key: one Ed25519 key in a PEM file (the data directory's by default), made on
first start with mode 0600, its public half published as a JSON Web Key Set for receivers to verify with.
A fleet's API replicas must all sign with the same key (GLM_IMAGE_WEBHOOK_KEY_FILE: one mounted secret); it
is created atomically, so replicas that start together on a shared directory agree on one key."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger(__name__)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKey:
    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_bytes = private.public_key().public_bytes_raw()
        self.kid = thumbprint(self.public_bytes)

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        """The key in `path`, made there first when there is none."""
        if not path.exists():  # a key someone else put there first wins
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            create_once(path, pem)
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{path} holds a {type(private).__name__}, not an Ed25519 private key")
        key = cls(private)
        log.info("webhooks are signed with key %s (%s)", key.kid, path)
        return key

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(self.public_bytes), "kid": self.kid}
        return {"keys": [{**jwk, "alg": "EdDSA", "use": "sig"}]}


def thumbprint(public_bytes: bytes) -> str:
    """The key's RFC 7638 thumbprint (its `kid`): SHA-256 of its required members, in order."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": b64url(public_bytes)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url(hashlib.sha256(canonical).digest())


def create_once(path: Path, secret: bytes) -> None:
    """Write `secret` to `path`, owner-readable, unless it exists: written aside and linked into place, so
    no process reads it half-written and concurrent creators agree on one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, aside = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(secret)
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
    finally:
        os.unlink(aside)
