"""OpenAI's serving class: a parsed generation or edit submitted through the job service, answered when
it is finished (images inline or as URLs) or streamed as OpenAI streams images — partial images from the
job's live previews, then one `completed` event per image; every failure in OpenAI's envelope."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile

from ...core.job import Job, JobStatus
from ...core.request import InvalidRequest
from ...media.uploads import keep_upload_bytes
from ...serving.admission import Refused
from ...serving.jobs import failure
from ..common import DialectServing, unless_disconnected
from . import translate
from .protocol import API, ImageParams, OpenAIError, OpenAIOptions, expired


class OpenAIServing(DialectServing):
    """One request's view of OpenAI's jobs: those of its key."""

    api = API

    async def generate(self, app: str, parsed: ImageParams, references: list[tuple[Any, str]]) -> Response:
        """`references`: (decoded image, `stored:` locator) per uploaded image (keep_upload)."""
        safety = self.services.settings.safety_default
        request, output, options = translate.to_internal(parsed, references, safety)
        job = self.jobs.new_job(self.caller, app, request, output, self.base_url, options)
        await self.jobs.submit(self.caller, job)
        if parsed.stream:
            prefix = "image_edit" if app == "images/edits" else "image_generation"
            events = self.stream(job, prefix, parsed.partial_images or 0)
            return StreamingResponse(
                events, media_type="text/event-stream", headers={"cache-control": "no-cache"}
            )
        finished = await unless_disconnected(self.request, self.jobs.finished(self.caller, job.id))
        if finished is None:
            raise expired()
        if finished.status != JobStatus.SUCCEEDED:
            raise translate.job_error(failure(finished))
        inline = OpenAIOptions.model_validate(finished.options).response_format == "b64_json"
        images = await self.jobs.arender(finished, inline)
        return JSONResponse(translate.response(finished, images).model_dump(exclude_none=True))

    async def stream(self, job: Job, prefix: str, wanted: int) -> AsyncIterator[str]:
        """Up to `wanted` partial images (the job's live previews, spread over its DiT steps), then one
        `completed` event per image; a failure is an `error` event."""
        sent, seen, current = 0, None, None
        try:
            async for snapshot in self.jobs.watch(self.caller, job.id, progress=wanted > 0):
                current, preview = snapshot.job, snapshot.live.preview if snapshot.live is not None else None
                if preview is None or (preview.image, preview.step) == seen:
                    continue
                seen = (preview.image, preview.step)
                if translate.partial_due(sent, wanted, *seen, preview.steps, job.request.num_images):
                    data = await self.jobs.call(translate.reencode, preview.data, job.output.format)
                    b64 = base64.b64encode(data).decode()
                    yield translate.stream_event(prefix, "partial_image", job, b64, partial_image_index=sent)
                    sent += 1
        except Refused as exc:  # the store is gone, or the server stops: said as the stream's last event
            unavailable = OpenAIError(exc.message, None, "service_unavailable", 503, "server_error")
            yield translate.stream_error(unavailable)
            return
        if current is None:
            yield translate.stream_error(expired())
        elif current.status != JobStatus.SUCCEEDED:
            yield translate.stream_error(translate.job_error(failure(current)))
        else:
            for image in await self.jobs.arender(current, True):
                b64 = image.base64 or ""
                yield translate.stream_event(prefix, "completed", current, b64, usage=translate.EMPTY_USAGE)

    async def keep_upload(self, upload: UploadFile, index: int) -> tuple[Any, str]:
        """Decode (validating it) and keep an uploaded image; returns it with its `stored:` locator."""
        settings = self.services.settings
        data = await upload.read(settings.fetch_max_bytes + 1)
        if len(data) > settings.fetch_max_bytes:
            raise OpenAIError(f"image {index} is larger than {settings.fetch_max_bytes} bytes.", "image")
        try:
            return await self.jobs.call(
                keep_upload_bytes, self.services.storage, data, "image", settings.input_max_pixels
            )
        except InvalidRequest as exc:
            raise OpenAIError(f"image {index} {exc.explanation}", "image") from None
