"""fal webhooks are signed as fal signs its own: a receiver on loopback, given the server's JWKS from
`/.well-known/jwks.json`, verifies each delivery with the verifier docs/api.md shows (executed from the
doc as written); a tampered body, a shifted timestamp, a stale delivery and another key all fail. The job
is submitted with fal's own Python client."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import fal_client
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers.keys import FAL_KEY

from glm_image_server.keys import owner_hash
from glm_image_server.signing import SigningKey

DOC = Path(__file__).parents[2] / "docs" / "api.md"
T2I = "fal-ai/glm-image"
SMALL = {"image_size": {"width": 96, "height": 64}, "num_inference_steps": 10}


def doc_verifier():
    """`verify_fal_webhook` from docs/api.md's Python block, run as written."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    (code,) = [block for block in blocks if "def verify_fal_webhook" in block]
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    return namespace["verify_fal_webhook"]


def test_a_fal_webhook_verifies_with_the_published_jwks(fal_server, web) -> None:
    verify = doc_verifier()
    jwks = httpx.get(f"{fal_server.base_url}/.well-known/jwks.json", timeout=30).json()  # no key needed
    assert [(k["kty"], k["crv"]) for k in jwks["keys"]] == [("OKP", "Ed25519")]
    deliveries, arrived = [], threading.Event()

    def receiver(handler) -> tuple[int, bytes, dict]:
        verified = verify(handler.headers, handler.body, jwks)
        deliveries.append((dict(handler.headers.items()), handler.body, verified))
        arrived.set()
        return (200 if verified else 401), b"", {}

    web.routes["/signed-hook"] = receiver
    hook = web.url("/signed-hook")
    handle = fal_client.submit(T2I, arguments={"prompt": "signed", **SMALL}, webhook_url=hook)
    assert arrived.wait(60), "no webhook arrived"
    headers, body, verified = deliveries[0]
    assert verified
    headers = {name.lower(): value for name, value in headers.items()}
    assert json.loads(body)["request_id"] == handle.request_id == headers["x-fal-webhook-request-id"]
    assert json.loads(body)["payload"] == fal_client.result(T2I, handle.request_id)
    assert headers["x-fal-webhook-user-id"] == owner_hash(FAL_KEY)
    sent_at = int(headers["x-fal-webhook-timestamp"])
    assert abs(time.time() - sent_at) < 60

    tampered = body.replace(b'"status":"OK"', b'"status":"ERROR"')
    assert tampered != body and not verify(headers, tampered, jwks)
    shifted = {**headers, "x-fal-webhook-timestamp": str(sent_at + 1)}
    assert not verify(shifted, body, jwks)
    assert verify(headers, body, jwks, now=sent_at + 299)
    assert not verify(headers, body, jwks, now=sent_at + 301)  # older than 300 s: refused
    assert not verify(headers, body, jwks, now=sent_at - 301)
    other = SigningKey(Ed25519PrivateKey.generate()).jwks()
    assert not verify(headers, body, other)
