"""Jobs as the store keeps them, for store-level tests."""

from __future__ import annotations

import time
import uuid

from glm_image_server.core.job import Job, JobStatus
from glm_image_server.core.request import GenerationRequest, OutputSpec


def make_job(
    prompt: str = "p",
    webhook: str | None = None,
    width: int = 64,
    num_images: int = 1,
    ttl_s: float | None = None,
) -> Job:
    request = GenerationRequest(
        prompt=prompt,
        width=width,
        height=64,
        num_inference_steps=10,
        guidance_scale=1.5,
        seed=1,
        num_images=num_images,
    )
    return Job(
        id=str(uuid.uuid4()),
        api="fal",
        app="fal-ai/glm-image",
        request=request,
        output=OutputSpec(webhook_url=webhook, ttl_s=ttl_s),
        status=JobStatus.QUEUED,
        created_at=time.time(),
        file_prefix=uuid.uuid4().hex,
        base_url="http://test/",
    )
