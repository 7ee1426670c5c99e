"""The one job factory of the tests: a `Job` as a dialect would have created it, ready for a store, a
scheduler, an executor or a renderer."""

from __future__ import annotations

import time
import uuid
from typing import Any

from glm_image_server.core.job import Job, JobStatus
from glm_image_server.core.request import GenerationRequest, OutputSpec


def make_job(
    prompt: str = "a cat",
    *,
    width: int = 64,
    height: int = 64,
    steps: int = 10,
    guidance: float = 1.5,
    seed: int = 7,
    num_images: int = 1,
    references: tuple[str, ...] = (),
    output: OutputSpec | None = None,
    webhook: str | None = None,
    ttl_s: float | None = None,
    api: str = "fal",
    app: str = "fal-ai/glm-image",
    status: JobStatus = JobStatus.QUEUED,
    job_id: str | None = None,
    **fields: Any,
) -> Job:
    """A small valid job: 64x64, 10 steps, seed 7, created now, with a fresh id and file prefix.

    `output` is the job's OutputSpec; without it, `webhook` and `ttl_s` make one. `fields` sets any other
    `Job` field (`result`, `error`, `created_at`, `file_prefix`, `owner`, `priority`, `start_by`, ...).
    Requests with different `width`, `height` or number of `references` have different batch keys."""
    request = GenerationRequest(
        prompt=prompt,
        width=width,
        height=height,
        num_inference_steps=steps,
        guidance_scale=guidance,
        seed=seed,
        num_images=num_images,
        references=references,
    )
    defaults: dict[str, Any] = {
        "created_at": time.time(),
        "file_prefix": uuid.uuid4().hex,
        "base_url": "http://testserver/",
    }
    return Job(
        id=job_id or str(uuid.uuid4()),
        api=api,
        app=app,
        request=request,
        output=output if output is not None else OutputSpec(webhook_url=webhook, ttl_s=ttl_s),
        status=status,
        **{**defaults, **fields},
    )
