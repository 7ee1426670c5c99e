"""fal's routes: sync runs at `POST /{app}`, the queue under `/queue/{app}` (or the same paths on a
`queue.*` host), so fal clients work with FAL_RUN_HOST=<host> and FAL_QUEUE_RUN_HOST=<host>/queue. Status,
result and cancel URLs carry the app without its sub-path, so both apps share one request store. Also the
playground, a client of this API: its page at `/` (static files in api/web/, no CDN: it works offline) and
`/playground/config`, the form's defaults and ranges from the fal input schema (never copied into JS)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response

from ...core.request import MAX_REFERENCES, MAX_SIDE, MIN_SIDE, SIZE_MULTIPLE, SIZE_PRESETS
from ...serving.jobs import ServingSettings
from .protocol import ALIAS, IMAGE_TO_IMAGE, OWNER, TEXT_TO_IMAGE, ImageToImageInput, TextToImageInput
from .serving import FalRoute, FalServing

REQUEST_PATH = f"/queue/{OWNER}/{ALIAS}/requests/{{request_id}}"
Webhook = Annotated[str | None, Query(description="URL to POST the result to when the request finishes")]
FLAG = "^(?i:0|1|true|false)$"
LogsFlag = Annotated[str, Query(pattern=FLAG, description="include logs: 1/0/true/false")]
PREVIEWS = "our extension: include the latest live preview as a data URI while running"
PreviewsFlag = Annotated[str, Query(pattern=FLAG, description=PREVIEWS)]

router = APIRouter(tags=["fal"], route_class=FalRoute)
playground_router = APIRouter(tags=["playground"])
WEB_DIR = Path(__file__).parents[1] / "web"


def _on(flag: str) -> bool:
    return flag.lower() in ("1", "true")


@router.post(f"/{TEXT_TO_IMAGE}", summary="Text to image, synchronous")
async def run_text_to_image(body: TextToImageInput, request: Request) -> Response:
    return await FalServing(request).run(TEXT_TO_IMAGE, body)


@router.post(f"/{IMAGE_TO_IMAGE}", summary="Image to image, synchronous")
async def run_image_to_image(body: ImageToImageInput, request: Request) -> Response:
    return await FalServing(request).run(IMAGE_TO_IMAGE, body)


@router.post(f"/queue/{TEXT_TO_IMAGE}", summary="Text to image, queued")
async def submit_text_to_image(
    body: TextToImageInput, request: Request, fal_webhook: Webhook = None
) -> Response:
    return await FalServing(request).queue(TEXT_TO_IMAGE, body, fal_webhook)


@router.post(f"/queue/{IMAGE_TO_IMAGE}", summary="Image to image, queued")
async def submit_image_to_image(
    body: ImageToImageInput, request: Request, fal_webhook: Webhook = None
) -> Response:
    return await FalServing(request).queue(IMAGE_TO_IMAGE, body, fal_webhook)


@router.get(f"{REQUEST_PATH}/status", summary="Request status")
async def status(
    request: Request, request_id: str, logs: LogsFlag = "0", previews: PreviewsFlag = "0"
) -> Response:
    return await FalServing(request).status(request_id, _on(logs), _on(previews))


@router.get(f"{REQUEST_PATH}/status/stream", summary="Request status as server-sent events")
async def status_stream(
    request: Request, request_id: str, logs: LogsFlag = "0", previews: PreviewsFlag = "0"
) -> Response:
    """An event whenever the status changes; each event's `logs` holds only the lines new since the
    previous event. A keep-alive comment after `stream_keepalive_s` of silence."""
    return await FalServing(request).stream(request_id, _on(logs), _on(previews))


@router.get(REQUEST_PATH, summary="Request result")
async def result(request: Request, request_id: str) -> Response:
    return await FalServing(request).result(request_id)


@router.put(f"{REQUEST_PATH}/cancel", summary="Cancel a request")
async def cancel(request: Request, request_id: str) -> Response:
    """Queued: removed (200 OK). Running: stopped at its next token or step (202). Finished: 400."""
    return await FalServing(request).cancel(request_id)


@playground_router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", headers={"cache-control": "no-cache"})


@playground_router.get("/playground/config", summary="The playground form's fields, defaults and ranges")
async def playground_config(request: Request) -> dict:
    # fal's input fields (JSON schema: default, minimum, maximum, enum), the size grid, and our offers
    settings: ServingSettings = request.app.state.services.settings
    return {
        "fields": ImageToImageInput.model_json_schema()["properties"],
        "size_presets": {name: {"width": w, "height": h} for name, (w, h) in SIZE_PRESETS.items()},
        "size": {"multiple": SIZE_MULTIPLE, "min": MIN_SIDE, "max": MAX_SIDE},
        "max_references": MAX_REFERENCES,
        "endpoints": {"text_to_image": TEXT_TO_IMAGE, "image_to_image": IMAGE_TO_IMAGE},
        "api_key_required": bool(settings.api_keys),
        "prompt_expansion": bool(settings.expansion_base_url),
        "pricing": {
            "mode": settings.pricing,
            "per_megapixel": settings.price_per_megapixel,
            "per_gpu_second": settings.price_per_gpu_second,
        },
        "model": settings.model,
    }
