"""S3 storage against a local S3 server (moto, over HTTP through boto3): objects, presigned downloads that
expire with the job, upload cleanup, and retention deleting a finished job's objects."""

from __future__ import annotations

import time
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from helpers.jobs import make_job

from glm_image_server.config import Settings
from glm_image_server.core.job import JobStatus
from glm_image_server.core.results import JobResult, StoredImage
from glm_image_server.media.s3 import S3Storage, parse_s3_url
from glm_image_server.media.storage import PRESIGN_MAX_S, open_storage
from glm_image_server.serving.jobs import JobService
from glm_image_server.serving.retention import RetentionSweeper


@pytest.fixture
def storage(s3_server, s3_env) -> S3Storage:
    return S3Storage(f"s3://{s3_server.new_bucket()}/outputs/run1")


def objects(storage: S3Storage) -> list[str]:
    listed = storage.client.list_objects_v2(Bucket=storage.bucket)
    return sorted(item["Key"] for item in listed.get("Contents", ()))


def test_parse_s3_url():
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b/")
    with pytest.raises(ValueError, match="s3://bucket"):
        parse_s3_url("https://bucket/a")


def test_storage_url_setting_chooses_s3(tmp_path, s3_server, s3_env):
    bucket = s3_server.new_bucket()
    chosen = open_storage(f"s3://{bucket}/p", tmp_path / "files")
    assert isinstance(chosen, S3Storage) and (chosen.bucket, chosen.prefix) == (bucket, "p/")
    assert not (tmp_path / "files").exists()  # nothing local


def test_objects_round_trip_under_the_prefix(storage):
    assert not storage.exists("abc-0.png")
    storage.save("abc-0.png", b"png bytes")
    assert storage.exists("abc-0.png") and storage.read("abc-0.png") == b"png bytes"
    head = storage.client.head_object(Bucket=storage.bucket, Key="outputs/run1/abc-0.png")
    assert head["ContentType"] == "image/png"
    assert objects(storage) == ["outputs/run1/abc-0.png"]
    storage.delete("abc-0.png")
    assert not storage.exists("abc-0.png") and objects(storage) == []
    with pytest.raises(ValueError, match="bad storage key"):
        storage.save("../escape.png", b"x")
    assert not storage.exists("../escape.png")


def test_a_presigned_url_downloads_the_object_and_expires_as_asked(storage):
    storage.save("img-1.jpg", b"\xff\xd8jpeg")
    url = storage.url("img-1.jpg", "http://ignored/", expires_s=90.4)
    assert parse_qs(urlparse(url).query)["X-Amz-Expires"] == ["90"]
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200 and response.content == b"\xff\xd8jpeg"
    assert response.headers["content-type"] == "image/jpeg"
    longest = storage.url("img-1.jpg", "http://ignored/", expires_s=30 * 24 * 3600)
    assert parse_qs(urlparse(longest).query)["X-Amz-Expires"] == [str(PRESIGN_MAX_S)]


def expiry(url: str) -> int:
    return int(parse_qs(urlparse(url).query)["X-Amz-Expires"][0])


def test_result_urls_expire_with_the_jobs_ttl_or_the_retention(storage, tmp_path):
    """(moto checks neither signatures nor expiry: what the URL asks for is what is checked here.)"""
    services = SimpleNamespace(settings=Settings(data_dir=tmp_path, result_retention_s=7200), storage=storage)
    now = time.time()
    with_ttl = make_job(ttl_s=600).model_copy(update={"finished_at": now - 100})
    assert 495 <= expiry(JobService.file_url(services, with_ttl, "k.png")) <= 500  # what is left of it
    plain = make_job().model_copy(update={"finished_at": now})
    assert 7195 <= expiry(JobService.file_url(services, plain, "k.png")) <= 7200
    assert 7195 <= expiry(JobService.upload_url(services, "upload-x.png", "http://base/")) <= 7200
    gone = make_job(ttl_s=1).model_copy(update={"finished_at": now - 100})
    assert expiry(JobService.file_url(services, gone, "k.png")) == 1


def test_old_uploads_are_deleted_and_outputs_kept(storage):
    storage.save("upload-old.png", b"1")
    storage.save("job-0.png", b"2")
    storage.delete_uploads_before(time.time() + 60)  # everything now counts as old
    assert objects(storage) == ["outputs/run1/job-0.png"]
    storage.save("upload-new.png", b"3")
    storage.delete_uploads_before(time.time() - 3600)
    assert "outputs/run1/upload-new.png" in objects(storage)


def test_retention_deletes_a_finished_jobs_objects(backend, storage):
    store = backend.open()
    old, kept = make_job(), make_job(ttl_s=3600)
    for job in (old, kept):
        store.create(job)
        store.claim_batch("w", 1, 60)
        key = f"{job.file_prefix}-0.png"
        storage.save(key, b"png")
        image = StoredImage(key=key, content_type="image/png", width=64, height=64, file_size=3, seed=1)
        result = JobResult(images=(image,), prompt="p", has_nsfw_concepts=(False,), timings={})
        assert store.finish(job.id, JobStatus.SUCCEEDED, result=result)
    time.sleep(0.01)
    assert RetentionSweeper(store, storage, retention_s=0.001).sweep() == 1
    assert store.get(old.id) is None
    assert objects(storage) == [f"outputs/run1/{kept.file_prefix}-0.png"]
