"""The playground page at `/`: static files shipped in the package (api/web/, no CDN: it works offline),
and the one small endpoint it needs beyond the public fal queue API — `/playground/config`, the form's
defaults and ranges taken from the fal input schema, so they are never duplicated in JavaScript. The page
is a client of fal's API, so it comes with the fal dialect."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from ...core.request import MAX_REFERENCES, MAX_SIDE, MIN_SIDE, SIZE_MULTIPLE, SIZE_PRESETS
from ...serving.jobs import ServingSettings
from .protocol import IMAGE_TO_IMAGE, TEXT_TO_IMAGE, ImageToImageInput

WEB_DIR = Path(__file__).parents[1] / "web"
router = APIRouter(tags=["playground"])


def config(settings: ServingSettings) -> dict:
    """What the page's form needs: fal's input fields (JSON schema properties: default, minimum, maximum,
    enum), the size grid and presets, and what this server offers."""
    fields = ImageToImageInput.model_json_schema()["properties"]
    return {
        "fields": fields,
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


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", headers={"cache-control": "no-cache"})


@router.get("/playground/config", summary="The playground form's fields, defaults and ranges")
async def playground_config(request: Request) -> dict:
    return config(request.app.state.services.settings)
