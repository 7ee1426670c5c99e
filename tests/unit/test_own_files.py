"""Our own file URLs given back as inputs are recognised (public URL, the request's base URL, the bound
address, a relative /files/ path, S3 presigned URLs) and become `stored:` locators; anyone else's URL with
the same path stays a URL; a key cannot leave the storage; a file that is gone is an input error."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest
from helpers.images import png_bytes

from glm_image_server.api.runware import translate as runware
from glm_image_server.api.runware.protocol import ImageInference
from glm_image_server.config import Settings
from glm_image_server.core.request import STORED, InvalidRequest
from glm_image_server.media.own_files import OwnFiles
from glm_image_server.media.s3 import S3Storage
from glm_image_server.media.storage import LocalStorage

KEY = "Abc123_-xyz-0.png"
BASE = "http://127.0.0.1:8000/"


def own_files(tmp_path: Path, **settings) -> OwnFiles:
    storage = LocalStorage(tmp_path / "files")
    storage.save(KEY, png_bytes())
    configured = Settings(data_dir=tmp_path, **settings)
    return OwnFiles(storage, configured.public_url, configured.host, configured.port)


@pytest.mark.parametrize(
    ("url", "base_url", "settings"),
    [
        (f"https://img.example.com/glm/files/{KEY}", BASE, {"public_url": "https://img.example.com/glm/"}),
        (
            f"https://img.example.com:443/glm/files/{KEY}?x=1",
            BASE,
            {"public_url": "https://img.example.com/glm"},
        ),
        (f"http://10.1.2.3:9000/files/{KEY}", "http://10.1.2.3:9000/", {}),
        (f"https://10.1.2.3:9000/files/{KEY}", "http://10.1.2.3:9000/", {}),  # one port, one listener
        (f"http://localhost:8123/files/{KEY}", "http://192.168.1.9:8123/", {"host": "0.0.0.0", "port": 8123}),
        (f"http://127.0.0.1:8123/files/{KEY}", BASE, {"host": "127.0.0.1", "port": 8123}),
        (f"http://[::1]:8123/files/{KEY}", BASE, {"host": "::1", "port": 8123}),
        (f"/files/{KEY}", BASE, {}),
        (f"/glm/files/{KEY}", BASE, {"public_url": "https://img.example.com/glm"}),
    ],
)
def test_own_urls_become_stored_locators(tmp_path: Path, url: str, base_url: str, settings: dict) -> None:
    assert own_files(tmp_path, **settings).locator(url, "references[0]", base_url) == STORED + KEY


@pytest.mark.parametrize(
    ("url", "settings"),
    [
        (f"https://elsewhere.example.com/files/{KEY}", {"public_url": "https://img.example.com"}),
        (f"https://img.example.com/other/files/{KEY}", {"public_url": "https://img.example.com/glm"}),
        (f"http://127.0.0.1:8001/files/{KEY}", {"port": 8123}),  # same host, another port
        (f"http://10.9.9.9:8123/files/{KEY}", {"host": "0.0.0.0", "port": 8123}),
        (f"http://127.0.0.1:8000/images/{KEY}", {}),
        ("data:image/png;base64,AAAA", {}),
    ],
)
def test_anyone_elses_url_stays_a_url(tmp_path: Path, url: str, settings: dict) -> None:
    assert own_files(tmp_path, **settings).locator(url, "references[0]", BASE) == url


@pytest.mark.parametrize(
    "url",
    [
        "/files/../jobs.sqlite3",
        "/files/..%2Fjobs.sqlite3",
        f"{BASE}files/..%2Fjobs.sqlite3",
        f"{BASE}files/sub/{KEY}",
        "/files/",
        "/etc/passwd",
        f"/static/{KEY}",
    ],
)
def test_keys_cannot_leave_the_storage(tmp_path: Path, url: str) -> None:
    (tmp_path / "jobs.sqlite3").write_bytes(png_bytes())  # what a traversal would reach
    with pytest.raises(InvalidRequest) as caught:
        own_files(tmp_path).locator(url, "references[1]", BASE)
    assert caught.value.field == "references[1]"
    assert "file of this server" in caught.value.message


def test_a_file_that_is_gone_is_an_input_error(tmp_path: Path) -> None:
    files = own_files(tmp_path)
    files.storage.delete(KEY)
    with pytest.raises(InvalidRequest, match="expired or does not exist") as caught:
        files.locators(("data:,x", f"{BASE}files/{KEY}"), BASE)
    assert caught.value.field == "references[1]"


def test_s3_presigned_urls_are_recognised_by_bucket_and_key(tmp_path: Path, s3_server, s3_env) -> None:
    bucket = s3_server.new_bucket()
    storage = S3Storage(f"s3://{bucket}/outputs/run1")
    storage.save(KEY, png_bytes())
    files = OwnFiles(storage, None, "127.0.0.1", 8000)
    presigned = storage.url(KEY, "", 3600)
    assert "X-Amz-Signature" in presigned
    assert files.locator(presigned, "references[0]", BASE) == STORED + KEY
    unsigned = presigned.split("?")[0]
    assert files.locator(unsigned, "references[0]", BASE) == STORED + KEY
    other_bucket = unsigned.replace(bucket, s3_server.new_bucket())
    assert files.locator(other_bucket, "references[0]", BASE) == other_bucket
    other_prefix = unsigned.replace("/run1/", "/run2/")
    assert files.locator(other_prefix, "references[0]", BASE) == other_prefix
    assert files.locator(f"/files/{KEY}", "references[0]", BASE) == STORED + KEY
    storage.delete(KEY)
    with pytest.raises(InvalidRequest, match="expired"):
        files.locator(presigned, "references[0]", BASE)


def test_runware_result_image_uuids_lead_back_to_their_task() -> None:
    task = str(uuid.uuid4())
    uuids = [runware.image_uuid(task, i) for i in range(20)]
    assert len(set(uuids)) == 20 and task not in uuids
    assert [runware.result_of(uuid.UUID(u)) for u in uuids] == [(task, i) for i in range(20)]
    assert runware.result_of(uuid.uuid4()) is None  # an upload's imageUUID


def test_runware_bare_base64_of_a_jpeg_is_no_path() -> None:
    """A JPEG's base64 starts with `/9j/`: data, not a relative path of ours."""
    jpeg = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(30)).decode()
    assert jpeg.startswith("/9j/") and not runware.is_path(jpeg)
    assert runware.is_path("/files/abc-0.png") and runware.is_path("/files/..%2Fx")
    body = {"taskType": "imageInference", "taskUUID": str(uuid.uuid4()), "model": "runware:glm-image@0"}
    body |= {"positivePrompt": "a fox", "referenceImages": [jpeg]}
    request, _, _ = runware.to_internal(ImageInference.model_validate(body), body, lambda _uuid: None)
    assert request.references == ("data:;base64," + jpeg,)
