"""fal's proxy convention, CORS and fal's storage upload flow, on the in-process app, spoken as fal's
JavaScript client speaks them (tests/js/node_modules/@fal-ai/client/src: middleware.js, storage.js). The
client itself drives them against a real server in tests/e2e/test_fal_js_client.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from helpers.app import app_settings, serve_app
from helpers.images import decode, png_bytes
from helpers.keys import FAL_KEY

ORIGIN = "https://app.example"
PROXY = "/api/fal/proxy"
INITIATE = "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3"
SMALL = {"image_size": {"width": 64, "height": 64}, "num_inference_steps": 10}
NO_KEY = {"authorization": ""}


@pytest.fixture(scope="module")
def cors_app(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, engine) -> Iterator[TestClient]:
    """Keys required, one allowed browser origin, a small input limit."""
    settings = app_settings(
        tmp_path_factory.mktemp("cors-app"),
        model_cache,
        api_keys=[FAL_KEY],
        cors_origins=[ORIGIN],
        fetch_max_bytes=200_000,
    )
    yield from serve_app(settings, engine, {"authorization": f"Key {FAL_KEY}"})


def proxied(client: TestClient, method: str, target: str, path: str = PROXY, **kwargs):
    headers = {"x-fal-target-url": target, **kwargs.pop("headers", {})}
    return client.request(method, path, headers=headers, **kwargs)


def preflight(client: TestClient, origin: str, path: str = PROXY):
    headers = {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type,x-fal-target-url,x-fal-queue-priority",
    }
    return client.options(path, headers=headers)


def test_cors_preflight_for_allowed_and_other_origins(cors_app: TestClient, fal_app: TestClient) -> None:
    allowed = preflight(cors_app, ORIGIN)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert {"PUT", "POST", "GET"} <= set(allowed.headers["access-control-allow-methods"].split(", "))
    requested = {h.strip() for h in allowed.headers["access-control-allow-headers"].lower().split(",")}
    assert {"authorization", "content-type", "x-fal-target-url", "x-fal-queue-priority"} <= requested

    other = preflight(cors_app, "https://elsewhere.example")
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    assert preflight(fal_app, ORIGIN).status_code == 400  # the default: same origin only

    # The real request from the allowed page: readable, with the request id exposed to the script.
    submitted = proxied(
        cors_app,
        "POST",
        "https://queue.fal.run/fal-ai/glm-image",
        json={"prompt": "cors", **SMALL},
        headers={"origin": ORIGIN},
    )
    assert submitted.status_code == 200
    assert submitted.headers["access-control-allow-origin"] == ORIGIN
    assert "x-fal-request-id" in submitted.headers["access-control-expose-headers"].lower()
    refused = cors_app.post("/fal-ai/glm-image", json={"prompt": "x"}, headers={"origin": ORIGIN, **NO_KEY})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN


def test_any_origin_when_asked(tmp_path: Path, model_cache: Path, engine) -> None:
    for client in serve_app(app_settings(tmp_path, model_cache, cors_origins=["*"]), engine):
        answer = preflight(client, "https://anywhere.example")
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/fal-ai/glm-image",
        "https://fal.run.evil.example/fal-ai/glm-image",
        "https://rest.fal.ai/storage/auth/token?storage_type=fal-cdn-v3",
        "https://fal.run/v1/images/generations",
        "https://fal.run/fal-ai/../files/x.png",
        "https://queue.fal.run/fal-ai/%2e%2e/v1/images/generations",
        "ftp://fal.run/fal-ai/glm-image",
        "not a url",
    ],
)
def test_other_targets_refused(fal_app: TestClient, target: str) -> None:
    answer = proxied(fal_app, "POST", target, json={"prompt": "x"})
    assert answer.status_code == 400
    assert "is not served here" in answer.json()["detail"]


def test_missing_target_refused_and_root_still_the_playground(fal_app: TestClient) -> None:
    answer = fal_app.post(PROXY, json={"prompt": "x"})
    assert answer.status_code == 400 and "x-fal-target-url" in answer.json()["detail"]
    assert fal_app.get("/").headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("path", ["/", PROXY, "/api/_fal/proxy"])
def test_queue_through_the_proxy(fal_app: TestClient, path: str) -> None:
    submitted = proxied(
        fal_app, "POST", "https://queue.fal.run/fal-ai/glm-image", path, json={"prompt": "proxied", **SMALL}
    )
    assert submitted.status_code == 200
    request_id = submitted.json()["request_id"]
    assert submitted.headers["x-fal-request-id"] == request_id
    base = f"https://queue.fal.run/fal-ai/glm-image/requests/{request_id}"
    assert proxied(fal_app, "GET", f"{base}/status?logs=1", path).json()["request_id"] == request_id
    result = proxied(fal_app, "GET", base, path)
    while result.status_code == 400:  # still in progress
        result = proxied(fal_app, "GET", base, path)
    assert len(result.json()["images"]) == 1
    assert proxied(fal_app, "PUT", f"{base}/cancel", path).json() == {"status": "ALREADY_COMPLETED"}


def test_sync_run_through_the_proxy_and_wrong_key(fal_app: TestClient) -> None:
    run = proxied(fal_app, "POST", "https://fal.run/fal-ai/glm-image", json={"prompt": "sync", **SMALL})
    assert run.status_code == 200 and len(run.json()["images"]) == 1
    wrong = proxied(
        fal_app,
        "POST",
        "https://fal.run/fal-ai/glm-image",
        json={"prompt": "x"},
        headers={"authorization": "Key wrong"},
    )
    assert wrong.status_code == 401 and "API key" in wrong.json()["detail"]
    unknown_app = proxied(fal_app, "POST", "https://fal.run/fal-ai/flux/dev", json={"prompt": "x"})
    assert unknown_app.status_code == 404


def initiate(client: TestClient, multipart: bool = False, content_type: str = "image/png", **kwargs):
    target = INITIATE.replace("initiate?", "initiate-multipart?") if multipart else INITIATE
    body = {"content_type": content_type, "file_name": "a.png"}
    return proxied(client, "POST", target, json=body, **kwargs)


def test_upload_and_read_back(fal_app: TestClient) -> None:
    started = initiate(fal_app)
    assert started.status_code == 200
    upload_url, file_url = started.json()["upload_url"], started.json()["file_url"]
    assert urlsplit(file_url).path.startswith("/files/upload-") and file_url.endswith(".png")
    assert fal_app.get(file_url).status_code == 404  # nothing until the PUT

    image = png_bytes((90, 70), (10, 200, 10))
    put = fal_app.put(upload_url, content=image, headers={"content-type": "image/png", **NO_KEY})
    assert put.status_code == 200 and put.json()["file_url"] == file_url
    stored = decode(fal_app.get(file_url).content)
    assert stored.size == (90, 70) and stored.getpixel((5, 5)) == (10, 200, 10)


def test_upload_url_is_the_credential(fal_app: TestClient) -> None:
    """Without the key: the initiate is refused; the signed URL works only as issued and until it expires."""
    assert initiate(fal_app, headers=NO_KEY).status_code == 401
    upload_url = initiate(fal_app).json()["upload_url"]
    token = urlsplit(upload_url).path.rsplit("/", 1)[1]
    altered = upload_url.replace(token, token.replace(".s.", ".m.", 1))
    assert fal_app.put(altered, content=png_bytes(), headers=NO_KEY).status_code == 403
    forged = upload_url[:-1] + ("B" if upload_url.endswith("A") else "A")
    assert fal_app.put(forged, content=png_bytes(), headers=NO_KEY).status_code == 403

    signer = fal_app.app.state.upload_signer
    owner = signer.verify(token).owner
    expired, _grant = signer.sign(owner, multipart=False, ttl_s=-5)
    answer = fal_app.put(f"/fal/storage/uploads/{expired}", content=png_bytes(), headers=NO_KEY)
    assert answer.status_code == 403 and "expired" in answer.json()["detail"]


def test_an_upload_url_works_once(fal_app: TestClient) -> None:
    """A leaked upload_url cannot replace an image already in use."""
    started = initiate(fal_app).json()
    first = fal_app.put(started["upload_url"], content=png_bytes((30, 20), (9, 9, 9)), headers=NO_KEY)
    assert first.status_code == 200
    again = fal_app.put(started["upload_url"], content=png_bytes((40, 40)), headers=NO_KEY)
    assert again.status_code == 409 and "initiate a new one" in again.json()["detail"]
    assert decode(fal_app.get(started["file_url"]).content).size == (30, 20)


def test_uploads_with_a_named_key(tmp_path: Path, model_cache: Path, engine) -> None:
    """`name:key` entries sign upload URLs with the key itself (the name is only a label)."""
    settings = app_settings(tmp_path, model_cache, api_keys=[f"alice:{FAL_KEY}"])
    for client in serve_app(settings, engine, {"authorization": f"Key {FAL_KEY}"}):
        started = initiate(client)
        assert started.status_code == 200, started.text
        put = client.put(started.json()["upload_url"], content=png_bytes(), headers=NO_KEY)
        assert put.status_code == 200 and put.json()["file_url"] == started.json()["file_url"]


def test_upload_limits(cors_app: TestClient) -> None:
    assert initiate(cors_app, content_type="text/html").status_code == 422
    upload_url = initiate(cors_app).json()["upload_url"]
    not_image = cors_app.put(upload_url, content=b"<html>hi</html>", headers=NO_KEY)
    assert not_image.status_code == 422 and not_image.json()["detail"][0]["loc"] == ["body", "file"]
    too_big = cors_app.put(upload_url, content=b"\0" * 200_001, headers=NO_KEY)
    assert too_big.status_code == 413

    disk = cors_app.app.state.services.admission.disk
    disk.min_free, disk._checked_at = float("inf"), 0.0
    try:
        assert initiate(cors_app).status_code == 507
        assert cors_app.put(upload_url, content=png_bytes(), headers=NO_KEY).status_code == 507
    finally:
        disk.min_free, disk._checked_at = 0.0, 0.0


def part_url(upload_url: str, suffix: str) -> str:
    """As storage.js builds them: `${origin}${pathname}/${part}${search}`."""
    parsed = urlsplit(upload_url)
    search = f"?{parsed.query}" if parsed.query else ""
    return f"{parsed.scheme}://{parsed.netloc}{parsed.path}/{suffix}{search}"


def test_multipart_upload(fal_app: TestClient) -> None:
    started = initiate(fal_app, multipart=True).json()
    upload_url, file_url = started["upload_url"], started["file_url"]
    image = png_bytes((120, 80), (0, 0, 250))
    chunks = [image[i : i + 100] for i in range(0, len(image), 100)]
    parts = []
    for number, chunk in enumerate(chunks, 1):
        answer = fal_app.put(part_url(upload_url, str(number)), content=chunk, headers=NO_KEY)
        assert answer.status_code == 200 and answer.json()["partNumber"] == number
        parts.append(answer.json())
    assert fal_app.put(upload_url, content=image, headers=NO_KEY).status_code == 404  # parts only
    # No more parts than an input of at most fetch_max_bytes (30 MiB) needs in parts of 5 MiB or more.
    beyond = fal_app.put(part_url(upload_url, "8"), content=b"x", headers=NO_KEY)
    assert beyond.status_code == 422 and "1 to 7" in beyond.text

    wrong = [{**parts[0], "etag": "0" * 32}, *parts[1:]]
    complete = part_url(upload_url, "complete")
    refused = fal_app.post(complete, json={"parts": wrong}, headers=NO_KEY)
    assert refused.status_code == 422 and "ETag" in refused.json()["detail"][0]["msg"]

    done = fal_app.post(complete, json={"parts": parts}, headers=NO_KEY)
    assert done.status_code == 200 and done.json()["file_url"] == file_url
    assert decode(fal_app.get(file_url).content).size == (120, 80)


def test_uploads_on_s3_storage_then_an_edit(
    tmp_path: Path, model_cache: Path, engine, s3_server, s3_env
) -> None:
    """With S3 storage: the upload lands in the bucket (parts too, until assembled), `file_url` is a
    presigned URL of it, and an edit given that URL reads it from the bucket (default URL rules)."""
    bucket = s3_server.new_bucket()
    settings = app_settings(tmp_path, model_cache, api_keys=[FAL_KEY], storage_url=f"s3://{bucket}/p")
    for client in serve_app(settings, engine, {"authorization": f"Key {FAL_KEY}"}):
        single = initiate(client).json()
        put = client.put(single["upload_url"], content=png_bytes((64, 96)), headers=NO_KEY)
        assert put.status_code == 200
        assert single["file_url"].startswith(s3_server.endpoint) and "Signature=" in single["file_url"]
        assert decode(httpx.get(single["file_url"]).content).size == (64, 96)

        multi = initiate(client, multipart=True).json()
        image = png_bytes((70, 50), (1, 2, 3))
        halves = [image[: len(image) // 2], image[len(image) // 2 :]]
        parts = [
            client.put(part_url(multi["upload_url"], str(n)), content=half, headers=NO_KEY).json()
            for n, half in enumerate(halves, 1)
        ]
        listed = s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]
        assert sum(item["Key"].endswith(".part") for item in listed) == 2
        done = client.post(part_url(multi["upload_url"], "complete"), json={"parts": parts}, headers=NO_KEY)
        assert done.status_code == 200
        listed = s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]
        assert not [item for item in listed if item["Key"].endswith(".part")]

        edit = client.post(
            "/fal-ai/glm-image/image-to-image",
            json={"prompt": "edit", "image_urls": [single["file_url"], multi["file_url"]], **SMALL},
        )
        assert edit.status_code == 200, edit.text
        assert len(edit.json()["images"]) == 1


def test_upload_urls_without_keys_survive_a_restart(tmp_path: Path, model_cache: Path, engine) -> None:
    """No keys configured: upload URLs are signed with a secret kept in the data directory (owner-only),
    so one issued before a restart still works after it."""
    settings = app_settings(tmp_path, model_cache)
    for client in serve_app(settings, engine):
        started = initiate(client).json()
    secret = tmp_path / "upload-url.secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    for client in serve_app(settings, engine):
        assert client.put(started["upload_url"], content=png_bytes()).status_code == 200
        assert decode(client.get(started["file_url"]).content).size == (80, 60)
