"""fal's storage flow, answered here so `fal.storage.upload` (and the JS client's automatic upload of
Blobs in an input) puts files on this server, not fal's CDN: `POST /fal/storage/upload/initiate
{content_type, file_name}` (fal's `rest.fal.ai/...` via the proxy convention) answers `{upload_url,
file_url}`; the client PUTs the bytes to `upload_url`. Big files go in parts: `initiate-multipart`, then
`PUT {upload_url}/{n}` (answers `{partNumber, etag}`) and `POST {upload_url}/complete {parts}`. An upload
is an input image like any other (fetch_max_bytes, input_max_pixels, kept as PNG for result_retention_s,
refused while the disk is short of min_free_disk_mb).

fal's clients PUT without their key, so the URL is the credential: it names the upload, its key and its
expiry, signed with an HMAC keyed by the asking API key (any replica can check it; a removed key's URLs
stop working at once), or with no keys configured, by a random secret kept in the data directory."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ...core.request import InvalidRequest
from ...keys import parse_keys
from ...media.storage import upload_key
from ...media.uploads import assemble_parts, keep_part, keep_upload_bytes
from ...serving.admission import LowDisk
from ...serving.services import Services
from ...signing import b64url, create_once
from .serving import FalBytesRoute, FalRoute

UPLOADS_PATH = "/fal/storage/uploads/"
UPLOAD_URL_TTL_S = 3600.0
SECRET_NAME = "upload-url.secret"
NO_OWNER = "-"


@dataclass(frozen=True)
class UploadGrant:
    """What an upload URL allows: writing upload `image_uuid` until `expires_at` (owner None: no keys)."""

    image_uuid: uuid.UUID
    owner: str | None
    multipart: bool
    expires_at: float


class UploadSigner:
    def __init__(self, keys: list[str], data_dir: Path) -> None:
        self._secrets: dict[str | None, bytes] = {k.owner: k.secret.encode() for k in parse_keys(keys)}
        if not keys:
            # made on first use, readable by this user only, never read half-written (create_once)
            create_once(data_dir / SECRET_NAME, secrets.token_bytes(32))
            self._secrets[None] = (data_dir / SECRET_NAME).read_bytes()

    def _mac(self, owner: str | None, payload: str) -> str | None:
        secret = self._secrets.get(owner)
        if secret is None:
            return None
        return b64url(hmac.new(secret, b"fal-upload-url:" + payload.encode(), hashlib.sha256).digest())

    def sign(
        self, owner: str | None, multipart: bool, ttl_s: float = UPLOAD_URL_TTL_S
    ) -> tuple[str, UploadGrant]:
        """A new upload's token (a URL path segment) and what it grants."""
        grant = UploadGrant(uuid.uuid4(), owner, multipart, float(int(time.time() + ttl_s)))
        kind = "m" if multipart else "s"
        payload = f"{grant.image_uuid.hex}.{int(grant.expires_at)}.{kind}.{owner or NO_OWNER}"
        mac = self._mac(owner, payload)
        assert mac is not None, "signing for a key that is not configured"
        return f"{payload}.{mac}", grant

    def verify(self, token: str) -> UploadGrant | None:
        """The grant of a token this server signed and that has not expired; None for anything else."""
        payload, _, mac = token.rpartition(".")
        with contextlib.suppress(ValueError):  # not five parts, or not a UUID
            hex_uuid, expires, kind, owner_text = payload.split(".")
            owner = None if owner_text == NO_OWNER else owner_text
            expected = self._mac(owner, payload)
            if expected is None or not hmac.compare_digest(expected, mac) or kind not in ("m", "s"):
                return None
            if expires.isdigit() and int(expires) >= time.time():
                return UploadGrant(uuid.UUID(hex=hex_uuid), owner, kind == "m", float(expires))
        return None


INITIATE_PATH = "/fal/storage/upload/initiate"
MAX_PARTS = 10_000
MIN_PART_BYTES = 5 * 1024 * 1024  # S3's smallest part but the last (fal's client sends 10 MB parts)
ACCEPTED_TYPES = "image/* (PNG, JPEG, WEBP, GIF, BMP or TIFF) or application/octet-stream"

router = APIRouter(tags=["fal uploads"], route_class=FalRoute)
bytes_router = APIRouter(tags=["fal uploads"], route_class=FalBytesRoute)


class InitiateUpload(BaseModel):
    content_type: str = Field(max_length=255, description="the file's MIME type")
    file_name: str = Field(default="", max_length=1024, description="the file's name (not kept)")


class UploadTarget(BaseModel):
    upload_url: str = Field(description="PUT the bytes here (signed: no key needed; valid for an hour)")
    file_url: str = Field(description="the uploaded image, to give as an input (image_urls)")


class Part(BaseModel):
    partNumber: int = Field(ge=1, le=MAX_PARTS)  # fal's client spells it so
    etag: str = Field(max_length=128)


class CompleteUpload(BaseModel):
    parts: list[Part] = Field(min_length=1, max_length=MAX_PARTS)


def _file_url(request: Request, grant: UploadGrant) -> str:
    return request.app.state.services.jobs.upload_url(upload_key(grant.image_uuid), str(request.base_url))


async def _initiate(request: Request, body: InitiateUpload, multipart: bool) -> JSONResponse:
    kind = body.content_type.split(";")[0].strip().lower()
    if not (kind.startswith("image/") or kind == "application/octet-stream"):
        raise InvalidRequest("content_type", f"{body.content_type!r} is not an image", ACCEPTED_TYPES)
    services = _check_disk(request)
    token, grant = request.app.state.upload_signer.sign(getattr(request.state, "owner", None), multipart)
    base = (services.settings.public_url or str(request.base_url)).rstrip("/")
    target = UploadTarget(upload_url=f"{base}{UPLOADS_PATH}{token}", file_url=_file_url(request, grant))
    return JSONResponse(target.model_dump())


@router.post(INITIATE_PATH, summary="Start an upload (fal's storage flow)", response_model=UploadTarget)
async def initiate(body: InitiateUpload, request: Request) -> JSONResponse:
    return await _initiate(request, body, multipart=False)


@router.post(f"{INITIATE_PATH}-multipart", summary="Start an upload in parts", response_model=UploadTarget)
async def initiate_multipart(body: InitiateUpload, request: Request) -> JSONResponse:
    return await _initiate(request, body, multipart=True)


def _grant(request: Request, multipart: bool) -> UploadGrant:
    """The grant the gate found in the URL (api/gate.py), if it is for this kind of upload."""
    grant: UploadGrant | None = getattr(request.state, "grant", None)
    if grant is None or grant.multipart != multipart:
        kind = "a multipart" if multipart else "a single-part"
        raise HTTPException(404, f"this upload URL is not for {kind} upload")
    return grant


def _check_disk(request: Request) -> Services:
    services = request.app.state.services
    if problem := services.admission.disk.problem():
        raise LowDisk(problem, 60.0)
    return services


async def _not_complete(services: Services, grant: UploadGrant) -> None:
    """409 once the upload exists: a leaked upload_url must not replace an image already in use."""
    if await services.call(services.storage.exists, upload_key(grant.image_uuid)):
        raise HTTPException(409, "this upload is complete: initiate a new one")


async def _body(request: Request) -> bytes:
    """The request's bytes, at most `fetch_max_bytes`, while the disk has room."""
    data, limit = await request.body(), request.app.state.services.settings.fetch_max_bytes
    if len(data) > limit:
        raise HTTPException(413, f"the upload is larger than {limit} bytes (fetch_max_bytes)")
    _check_disk(request)
    return data


async def _kept(request: Request, grant: UploadGrant, data: bytes) -> JSONResponse:
    """Decode (the input limits) and keep as the grant's upload."""
    services = request.app.state.services
    max_pixels = services.settings.input_max_pixels
    await services.call(keep_upload_bytes, services.storage, data, "file", max_pixels, grant.image_uuid)
    return JSONResponse({"file_url": _file_url(request, grant)})


@bytes_router.put(UPLOADS_PATH + "{token}", summary="Upload the bytes (to the signed upload_url)")
async def put_upload(token: str, request: Request) -> JSONResponse:
    grant = _grant(request, multipart=False)
    await _not_complete(request.app.state.services, grant)
    return await _kept(request, grant, await _body(request))


@bytes_router.put(UPLOADS_PATH + "{token}/{part_number}", summary="Upload one part")
async def put_part(token: str, part_number: int, request: Request) -> JSONResponse:
    grant, services = _grant(request, multipart=True), request.app.state.services
    # How many parts an upload of at most fetch_max_bytes can need: more would only fill the disk.
    most = min(MAX_PARTS, -(-services.settings.fetch_max_bytes // MIN_PART_BYTES) + 1)
    if not 1 <= part_number <= most:
        raise InvalidRequest("part_number", f"{part_number} is out of range", f"1 to {most}")
    data = await _body(request)
    etag = await services.call(keep_part, services.storage, grant.image_uuid, part_number, data)
    return JSONResponse({"partNumber": part_number, "etag": etag})


@router.post(UPLOADS_PATH + "{token}/complete", summary="Finish an upload in parts")
async def complete(token: str, body: CompleteUpload, request: Request) -> JSONResponse:
    grant = _grant(request, multipart=True)
    numbers = [part.partNumber for part in body.parts]
    if numbers != sorted(set(numbers)):
        raise InvalidRequest("parts", "are not in ascending order, once each", "1, 2, 3, ...")
    services = request.app.state.services
    await _not_complete(services, grant)
    parts, limit = [(part.partNumber, part.etag) for part in body.parts], services.settings.fetch_max_bytes
    data = await services.call(assemble_parts, services.storage, grant.image_uuid, parts, limit)
    return await _kept(request, grant, data)
