"""Named API keys (`name:key`, plain keys as before) and the webhook signing key: made once with mode
0600, the same key on every later start, a JWKS with the key's RFC 7638 thumbprint as its kid, and a
fal signature that the docs' verifier accepts."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from glm_image_server.api.auth import key_ok, owner_of
from glm_image_server.api.fal.translate import webhook_headers
from glm_image_server.config import Settings
from glm_image_server.keys import NO_KEYS, ApiKey, owner_hash, owner_label, parse_key
from glm_image_server.signing import SigningKey


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("alice:sk-123", ApiKey("sk-123", "alice")),
        ("sk-123", ApiKey("sk-123")),
        ("team.a@x:ab:cd", ApiKey("ab:cd", "team.a@x")),  # a key with a colon, given a name
        ("not a name:sk", ApiKey("not a name:sk")),  # no valid name in front: a plain key
        ("alice:", ApiKey("alice:")),
    ],
)
def test_key_entries(entry: str, parsed: ApiKey) -> None:
    assert parse_key(entry) == parsed


def test_named_keys_authenticate_by_their_key_alone() -> None:
    entries = ["alice:sk-a", "sk-b"]
    assert key_ok(entries, "sk-a") and key_ok(entries, "sk-b")
    assert not key_ok(entries, "alice:sk-a") and not key_ok(entries, "alice") and not key_ok(entries, None)
    assert owner_of(entries, "sk-a") == owner_hash("sk-a")  # naming a key keeps its jobs' owner
    assert owner_label(entries, owner_hash("sk-a")) == "alice"
    assert owner_label(entries, owner_hash("sk-b")) == owner_hash("sk-b")
    assert owner_label([], None) == NO_KEYS


def test_a_named_key_that_is_empty_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="named 'alice' is empty"):
        Settings(api_keys="alice:,bob:sk-b")
    assert Settings(api_keys="alice:sk-a,sk-b").api_keys == ["alice:sk-a", "sk-b"]


def test_the_signing_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "data" / "webhook-key.pem"
    first = SigningKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SigningKey.load_or_create(path).kid == first.kid  # the same key on the next start
    assert [p.name for p in path.parent.iterdir()] == ["webhook-key.pem"]  # nothing left aside
    assert Settings(data_dir=tmp_path / "data").webhook_key_path == path


def test_a_key_made_by_openssl_is_used(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(path)], check=True)
    os.chmod(path, 0o600)
    assert SigningKey.load_or_create(path).public_bytes


def test_a_key_of_another_kind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    with pytest.raises(ValueError, match="not an Ed25519 private key"):
        SigningKey.load_or_create(path)


def test_the_jwks_publishes_the_public_key(tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path / "key.pem")
    (jwk,) = key.jwks()["keys"]
    assert {k: jwk[k] for k in ("kty", "crv", "alg", "use")} == {
        "kty": "OKP",
        "crv": "Ed25519",
        "alg": "EdDSA",
        "use": "sig",
    }
    public = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
    assert public == key.public_bytes and len(public) == 32
    members = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": jwk["x"]}, separators=(",", ":")).encode()
    expected_kid = base64.urlsafe_b64encode(hashlib.sha256(members).digest()).rstrip(b"=").decode()
    assert jwk["kid"] == expected_kid


def test_fal_signature_headers(tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path / "key.pem")
    body = b'{"request_id":"r-1","status":"OK"}'
    headers = webhook_headers(key.sign, "r-1", "u-1", body, 1_700_000_000.7)
    assert headers["x-fal-webhook-timestamp"] == "1700000000"
    assert headers["x-fal-webhook-request-id"] == "r-1" and headers["x-fal-webhook-user-id"] == "u-1"
    message = f"r-1\nu-1\n1700000000\n{hashlib.sha256(body).hexdigest()}".encode()
    public = Ed25519PublicKey.from_public_bytes(key.public_bytes)
    public.verify(bytes.fromhex(headers["x-fal-webhook-signature"]), message)  # raises when wrong
