"""Each dialect's translation between its wire format and the internal model, in-process (no server)."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from helpers.jobs import make_job
from PIL import Image
from pydantic import ValidationError

from glm_image_server.api.dialect import discover
from glm_image_server.api.fal import translate as fal
from glm_image_server.api.fal.protocol import ImageSize, ImageToImageInput, TextToImageInput
from glm_image_server.api.openai import translate as openai
from glm_image_server.api.openai.protocol import ImageParams, OpenAIError
from glm_image_server.api.runware import translate as runware
from glm_image_server.api.runware.protocol import ImageInference, RunwareOptions, TaskError
from glm_image_server.core.job import Job, JobError, JobStatus
from glm_image_server.core.request import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS_API,
    STORED,
    GenerationRequest,
    OutputSpec,
    size_like,
)
from glm_image_server.core.results import JobResult, SpanCheck, StoredImage, TextCheck
from glm_image_server.serving.jobs import RenderedImage


def stored(i: int, seed: int) -> StoredImage:
    return StoredImage(
        key=f"pfx-{i}.png", content_type="image/png", width=768, height=512, file_size=100 + i, seed=seed
    )


def job_to_render(
    status: JobStatus = JobStatus.SUCCEEDED,
    *,
    api: str = "fal",
    images: int = 2,
    error: JobError | None = None,
    cost: float = 0.1,
) -> Job:
    """A 768x512 PNG job with seed 40 (`images` of them, every other one flagged NSFW when it succeeded)."""
    result = None
    if status == JobStatus.SUCCEEDED:
        result = JobResult(
            images=tuple(stored(i, 40 + i) for i in range(images)),
            prompt="the prompt used",
            has_nsfw_concepts=tuple(i % 2 == 1 for i in range(images)),
            timings={"inference": 2.5, "queue": 0.1},
            cost=cost,
        )
    return make_job(
        width=768,
        height=512,
        seed=40,
        num_images=images,
        output=OutputSpec(format="png"),
        api=api,
        app="app",
        status=status,
        created_at=1_700_000_000.5,
        file_prefix="pfx",
        result=result,
        error=error,
    )


def rendered(job: Job, inline: bool = False) -> list[RenderedImage]:
    assert job.result is not None
    if inline:
        return [RenderedImage(image, base64=f"QUJD{i}") for i, image in enumerate(job.result.images)]
    return [RenderedImage(image, url=f"http://files/{image.key}") for image in job.result.images]


INPUT_ERROR = JobError(kind="input", message="could not fetch it", field="references[1]")
INTERNAL_ERROR = JobError(kind="internal", message="generation failed: boom")
CANCELLED_ERROR = JobError(kind="cancelled", message="cancelled")


# --- fal


def test_fal_defaults():
    request, output, options = fal.to_internal(TextToImageInput(prompt="a cat"), None)
    assert (request.width, request.height) == (1024, 1024)
    assert (request.num_inference_steps, request.guidance_scale) == (30, 1.5)
    assert (DEFAULT_STEPS_API, DEFAULT_GUIDANCE) == (30, 1.5)
    assert request.num_images == 1
    assert request.references == ()
    assert isinstance(request.seed, int)
    assert 0 <= request.seed < 2**32
    assert output == OutputSpec(format="jpeg", safety_check=True, expand_prompt=False, webhook_url=None)
    assert options.sync_mode is False


def test_fal_fixes_a_seed_when_absent_and_keeps_a_given_one():
    seeds = {fal.to_internal(TextToImageInput(prompt="a cat"), None)[0].seed for _ in range(8)}
    assert len(seeds) > 1  # chosen per request, at random
    request, _, _ = fal.to_internal(TextToImageInput(prompt="a cat", seed=12345, num_images=3), None)
    assert request.seed == 12345
    assert request.seeds == [12345, 12346, 12347]


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("square_hd", (1024, 1024)),
        ("square", (512, 512)),
        ("portrait_4_3", (768, 1024)),
        ("portrait_16_9", (576, 1024)),
        ("landscape_4_3", (1024, 768)),
        ("landscape_16_9", (1024, 576)),
        ({"width": 768, "height": 320}, (768, 320)),
    ],
)
def test_fal_image_sizes(size, expected):
    request, _, _ = fal.to_internal(TextToImageInput(prompt="a cat", image_size=size), None)
    assert (request.width, request.height) == expected


@pytest.mark.parametrize("size", [{"width": 1000, "height": 512}, {"width": 4096, "height": 512}])
def test_fal_rejects_sizes_off_the_grid(size):
    with pytest.raises(ValidationError, match="multiples of 32"):
        TextToImageInput(prompt="a cat", image_size=ImageSize(**size))


def test_fal_image_to_image_with_references_and_a_webhook():
    body = ImageToImageInput(
        prompt="make it blue",
        image_urls=["https://example.com/a.png", "data:image/png;base64,AAAA"],
        num_inference_steps=40,
        guidance_scale=3,
        output_format="webp",
        enable_safety_checker=False,
        enable_prompt_expansion=True,
        sync_mode=True,
    )
    request, output, options = fal.to_internal(body, "https://example.com/hook")
    assert request.references == ("https://example.com/a.png", "data:image/png;base64,AAAA")
    assert (request.num_inference_steps, request.guidance_scale) == (40, 3.0)
    assert output == OutputSpec(
        format="webp", safety_check=False, expand_prompt=True, webhook_url="https://example.com/hook"
    )
    assert options.sync_mode is True


def test_fal_accepts_a_single_image_url_string():
    body = ImageToImageInput(prompt="x", image_urls="https://example.com/a.png")
    assert fal.to_internal(body, None)[0].references == ("https://example.com/a.png",)


def test_fal_rejects_reference_schemes():
    with pytest.raises(ValidationError, match=r"image_urls\[0\]"):
        ImageToImageInput(prompt="x", image_urls=["file:///etc/passwd"])


@pytest.mark.parametrize(
    ("field", "location"),
    [
        ("references[1]", ["body", "image_urls", 1]),
        ("references", ["body", "image_urls"]),
        ("width", ["body", "image_size"]),
        ("height", ["body", "image_size"]),
        ("prompt", ["body", "prompt"]),
        ("num_inference_steps", ["body", "num_inference_steps"]),
    ],
)
def test_fal_loc(field, location):
    assert fal.loc(field) == location


def test_fal_detail_and_error_text():
    assert fal.detail(INPUT_ERROR) == [
        {"loc": ["body", "image_urls", 1], "msg": "could not fetch it", "type": "value_error"}
    ]
    assert fal.error_text(INPUT_ERROR) == "image_urls.1: could not fetch it"
    assert fal.error_text(INTERNAL_ERROR) == "generation failed: boom"
    assert fal.error_text(CANCELLED_ERROR) == "cancelled"


def test_fal_error_body():
    assert fal.error_body(INPUT_ERROR) == (422, {"detail": fal.detail(INPUT_ERROR)})
    assert fal.error_body(INTERNAL_ERROR) == (
        500,
        {"detail": "generation failed: boom", "error_type": "internal_error"},
    )
    assert fal.error_body(CANCELLED_ERROR) == (
        400,
        {"detail": "cancelled", "error_type": "request_cancelled"},
    )


URLS = {"status_url": "http://s/status", "response_url": "http://s/response"}


def test_fal_status_body_queued_and_running():
    queued = job_to_render(JobStatus.QUEUED)
    assert fal.status_body(queued, URLS, 3, None) == {
        "status": "IN_QUEUE",
        "request_id": queued.id,
        **URLS,
        "queue_position": 3,
        "logs": None,
    }
    running = job_to_render(JobStatus.RUNNING)
    logs = [{"message": "hi"}]
    assert fal.status_body(running, URLS, 0, logs) == {
        "status": "IN_PROGRESS",
        "request_id": running.id,
        **URLS,
        "logs": logs,
    }


def test_fal_status_body_succeeded():
    job = job_to_render()
    body = fal.status_body(job, URLS, 0, None)
    assert body["status"] == "COMPLETED"
    assert body["metrics"] == {"inference_time": 2.5}
    assert "error" not in body
    assert "queue_position" not in body


@pytest.mark.parametrize(
    ("error", "error_type", "text"),
    [
        (INPUT_ERROR, "validation_error", "image_urls.1: could not fetch it"),
        (INTERNAL_ERROR, "internal_error", "generation failed: boom"),
        (CANCELLED_ERROR, "request_cancelled", "cancelled"),
        (None, "internal_error", "failed"),  # a failed job without an error still renders
    ],
)
def test_fal_status_body_failed(error, error_type, text):
    status = JobStatus.CANCELLED if error is CANCELLED_ERROR else JobStatus.FAILED
    job = job_to_render(status, error=error)
    body = fal.status_body(job, URLS, 0, [])
    assert body["status"] == "COMPLETED"
    assert (body["error"], body["error_type"]) == (text, error_type)
    assert body["metrics"] == {"inference_time": None}


def test_fal_output_with_urls_and_inline():
    job = job_to_render()
    out = fal.output(job, rendered(job))
    assert [image.url for image in out.images] == ["http://files/pfx-0.png", "http://files/pfx-1.png"]
    assert out.seed == 40
    assert out.prompt == "the prompt used"
    assert out.has_nsfw_concepts == [False, True]
    assert out.images[1].file_size == 101
    inline = fal.output(job, rendered(job, inline=True))
    assert inline.images[0].url == "data:image/png;base64,QUJD0"


def test_fal_webhook_payload():
    job = job_to_render()
    ok = fal.webhook_payload(job, rendered(job))
    assert (ok["status"], ok["request_id"], ok["error"]) == ("OK", job.id, None)
    assert ok["payload"]["images"][0]["url"] == "http://files/pfx-0.png"
    failed = fal.webhook_payload(job_to_render(JobStatus.FAILED, error=INPUT_ERROR), None)
    assert failed["status"] == "ERROR"
    assert failed["payload"] == {"detail": fal.detail(INPUT_ERROR)}
    assert failed["error"] == "image_urls.1: could not fetch it"


def test_fal_log_entries():
    from glm_image_server.core.job import LogEntry

    (entry,) = fal.log_entries([LogEntry(timestamp=0.0, level="WARN", message="m")])
    assert entry == {
        "message": "m",
        "level": "WARN",
        "source": "USER",
        "timestamp": "1970-01-01T00:00:00+00:00",
    }


# --- Runware

TASK_UUID = "3f2b1c6e-9a4d-4e1b-8c7a-0d5e6f7a8b9c"
UPLOADED = uuid.UUID("11111111-2222-4333-8444-555555555555")


def task(**fields) -> dict:
    return {
        "taskType": "imageInference",
        "taskUUID": TASK_UUID,
        "model": "runware:glm-image@0",
        "positivePrompt": "a red fox",
        **fields,
    }


def lookup(image_uuid: uuid.UUID) -> str | None:
    return f"{STORED}uploads/{image_uuid}.png" if image_uuid == UPLOADED else None


def rw(**fields):
    body = task(**fields)
    return runware.to_internal(ImageInference.model_validate(body), body, lookup)


def test_runware_defaults():
    request, output, options = rw()
    assert (request.width, request.height, request.num_inference_steps) == (1024, 1024, 30)
    assert request.guidance_scale == 1.5
    assert 0 <= request.seed < 2**32
    assert output == OutputSpec(format="jpeg", quality=95, safety_check=False)
    assert options == RunwareOptions(outputType="URL", includeCost=False)


@pytest.mark.parametrize(("wire", "internal"), [("JPG", "jpeg"), ("PNG", "png"), ("WEBP", "webp")])
def test_runware_output_formats(wire, internal):
    _, output, _ = rw(outputFormat=wire, outputQuality=70)
    assert (output.format, output.quality) == (internal, 70)


def test_runware_fields_map_to_the_request():
    request, output, options = rw(
        width=768,
        height=512,
        steps=12,
        CFGScale=4,
        seed=99,
        numberResults=3,
        webhookURL="https://example.com/hook",
        uploadEndpoint="https://example.com/put",
        includeCost=True,
        outputType="base64Data",
    )
    assert (request.width, request.height, request.num_inference_steps, request.guidance_scale) == (
        768,
        512,
        12,
        4.0,
    )
    assert request.seeds == [99, 100, 101]
    assert (output.webhook_url, output.upload_url) == ("https://example.com/hook", "https://example.com/put")
    assert options == RunwareOptions(outputType="base64Data", includeCost=True)


@pytest.mark.parametrize(("output_type", "ttl_s"), [("URL", 120.0), ("dataURI", None), ("base64Data", None)])
def test_runware_ttl_applies_only_to_url_output(output_type, ttl_s):
    _, output, _ = rw(ttl=120, outputType=output_type)
    assert output.ttl_s == ttl_s


@pytest.mark.parametrize(
    ("safety", "checked"),
    [
        (None, False),
        ({"checkContent": False}, False),
        ({"checkContent": True}, True),
        ({"checkContent": True, "mode": "fast"}, True),
        ({"checkContent": True, "mode": "none"}, False),
    ],
)
def test_runware_safety_flags(safety, checked):
    fields = {} if safety is None else {"safety": safety}
    assert rw(**fields)[1].safety_check is checked


def test_runware_references():
    refs = [
        "https://example.com/a.png",
        str(UPLOADED),
        "data:image/png;base64,AAAA",
        "iVBORw0K\nGgo=",
    ]
    request, _, _ = rw(inputs={"referenceImages": refs})
    assert request.references == (
        "https://example.com/a.png",
        f"{STORED}uploads/{UPLOADED}.png",
        "data:image/png;base64,AAAA",
        "data:;base64,iVBORw0KGgo=",
    )


def test_runware_top_level_reference_images_are_accepted():
    request, _, _ = rw(referenceImages=["https://example.com/a.png"])
    assert request.references == ("https://example.com/a.png",)


def test_runware_unknown_image_uuid_is_an_invalid_reference():
    unknown = str(uuid.uuid4())
    with pytest.raises(TaskError) as caught:
        rw(inputs={"referenceImages": ["https://example.com/a.png", unknown]})
    error = caught.value
    assert (error.code, error.parameter, error.status) == ("invalidReferenceImages", "referenceImages", 400)
    assert "referenceImages[1]" in error.message
    assert unknown in error.message
    assert error.item()["taskUUID"] == TASK_UUID
    assert error.item()["taskType"] == "imageInference"


def test_runware_garbage_reference_is_invalid():
    with pytest.raises(TaskError) as caught:
        rw(inputs={"referenceImages": ["not an image!"]})
    assert caught.value.code == "invalidReferenceImages"


def test_runware_an_internal_validation_error_names_the_runware_parameter():
    with pytest.raises(TaskError) as caught:
        rw(positivePrompt="   ")  # long enough for the schema, blank for the model
    assert (caught.value.code, caught.value.parameter) == ("invalidPositivePrompt", "positivePrompt")


@pytest.mark.parametrize(
    ("change", "code", "parameter"),
    [
        ({"positivePrompt": None}, "missingPositivePrompt", "positivePrompt"),
        ({"model": None}, "missingModel", "model"),
        ({"width": 1000}, "invalidWidth", "width"),
        ({"width": 64}, "invalidWidth", "width"),
        ({"height": 4096}, "invalidHeight", "height"),
        ({"steps": 0}, "invalidSteps", "steps"),
        ({"CFGScale": 31}, "invalidCFGScale", "CFGScale"),
        ({"numberResults": 21}, "invalidNumberResults", "numberResults"),
        ({"taskUUID": "nope"}, "invalidTaskUUID", "taskUUID"),
        ({"webhookURL": "ftp://x"}, "invalidWebhookURL", "webhookURL"),
        ({"outputFormat": "GIF"}, "invalidOutputFormat", "outputFormat"),
    ],
)
def test_runware_from_validation(change, code, parameter):
    body = task(**{k: v for k, v in change.items() if v is not None})
    for key in [k for k, v in change.items() if v is None]:
        del body[key]
    with pytest.raises(ValidationError) as caught:
        ImageInference.model_validate(body)
    error = runware.from_validation(caught.value, body)
    assert (error.code, error.parameter) == (code, parameter)
    assert error.task_uuid == body["taskUUID"]
    assert "Value error" not in error.message
    if code.startswith("missing"):
        assert error.message == f"missing parameter: {parameter}"


def runware_job(**kwargs) -> Job:
    return job_to_render(api="runware", **kwargs)


@pytest.mark.parametrize(
    ("output_type", "field", "inline"),
    [("URL", "imageURL", False), ("dataURI", "imageDataURI", True), ("base64Data", "imageBase64Data", True)],
)
def test_runware_items(output_type, field, inline):
    job = runware_job(cost=0.1)
    images = rendered(job, inline)
    items = runware.items(job, images, RunwareOptions(outputType=output_type, includeCost=True))
    assert len(items) == 2
    expected = {
        "URL": ["http://files/pfx-0.png", "http://files/pfx-1.png"],
        "dataURI": ["data:image/png;base64,QUJD0", "data:image/png;base64,QUJD1"],
        "base64Data": ["QUJD0", "QUJD1"],
    }[output_type]
    assert [item[field] for item in items] == expected
    assert [item["seed"] for item in items] == [40, 41]
    assert [item["NSFWContent"] for item in items] == [False, True]
    assert [item["cost"] for item in items] == [0.05, 0.05]
    assert all(item["taskUUID"] == job.id and item["status"] == "success" for item in items)
    assert all(item["taskType"] == "imageInference" for item in items)
    other_fields = set(runware.IMAGE_FIELDS.values()) - {field}
    assert not any(name in item for item in items for name in other_fields)
    uuids = [item["imageUUID"] for item in items]
    assert uuids == [runware.image_uuid(job.id, 0), runware.image_uuid(job.id, 1)]
    assert len(set(uuids)) == 2
    assert all(uuid.UUID(value) for value in uuids)


def test_runware_items_without_cost():
    job = runware_job()
    items = runware.items(job, rendered(job), RunwareOptions())
    assert all("cost" not in item for item in items)


def test_runware_error_items():
    cancelled = runware.error_item(runware_job(status=JobStatus.CANCELLED, error=CANCELLED_ERROR))
    assert (cancelled.code, cancelled.status) == ("taskCancelled", 400)
    failed = runware.error_item(runware_job(status=JobStatus.FAILED, error=INTERNAL_ERROR))
    assert (failed.code, failed.status, failed.message) == ("taskFailed", 500, "generation failed: boom")
    job = runware_job(status=JobStatus.FAILED, error=INPUT_ERROR)
    invalid = runware.error_item(job)
    assert (invalid.code, invalid.parameter, invalid.status) == (
        "invalidReferenceImages",
        "referenceImages",
        400,
    )
    assert invalid.item()["taskUUID"] == job.id
    prompt = runware.error_item(
        runware_job(status=JobStatus.FAILED, error=JobError(kind="input", message="m", field="prompt"))
    )
    assert (prompt.code, prompt.parameter) == ("invalidPositivePrompt", "positivePrompt")


# --- OpenAI


def openai_error(fields: dict) -> OpenAIError:
    with pytest.raises(OpenAIError) as caught:
        openai.params(fields)
    return caught.value


def test_openai_missing_prompt():
    error = openai_error({"n": 1})
    assert (error.param, error.code, error.status) == ("prompt", "missing_required_parameter", 400)
    assert "prompt" in error.message


def test_openai_partial_images_need_stream():
    error = openai_error({"prompt": "x", "partial_images": 1})
    assert (error.param, error.code) == ("partial_images", "invalid_value")
    assert openai.params({"prompt": "x", "stream": True, "partial_images": 3}).partial_images == 3


def test_openai_partial_images_spread_over_the_steps():
    due = [step for step in range(1, 31) if openai.partial_due(0, 2, 0, step, 30, 1)]
    assert due[0] == 10  # the first of 2 goes out a third of the way
    assert not openai.partial_due(1, 2, 0, 15, 30, 1) and openai.partial_due(1, 2, 0, 20, 30, 1)
    assert not openai.partial_due(2, 2, 0, 29, 30, 1)  # never more than asked for


def test_openai_transparent_background_is_unsupported():
    error = openai_error({"prompt": "x", "background": "transparent"})
    assert (error.param, error.code) == ("background", "unsupported_value")
    assert openai.params({"prompt": "x", "background": "opaque"}).background == "opaque"


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"prompt": "x", "n": 11}, "n"), ({"prompt": "x", "response_format": "jpeg"}, "response_format")],
)
def test_openai_invalid_values(fields, param):
    error = openai_error(fields)
    assert (error.param, error.code, error.status) == (param, "invalid_value", 400)


def test_openai_response_json_envelope():
    error = OpenAIError("bad", "size")
    response = error.response()
    assert response.status_code == 400
    assert response.body == (
        b'{"error":{"message":"bad","type":"invalid_request_error","param":"size","code":"invalid_value"}}'
    )


def test_openai_default_size_without_references():
    request, output, options = openai.to_internal(ImageParams(prompt="a cat"), [], True)
    assert (request.width, request.height) == (1024, 1024)
    assert (request.num_inference_steps, request.guidance_scale) == (30, 1.5)
    assert request.references == ()
    assert output == OutputSpec(format="png", quality=95, safety_check=True)
    assert options.response_format == "b64_json"


def test_openai_auto_size_follows_the_first_reference():
    wide, tall = Image.new("RGB", (1600, 900)), Image.new("RGB", (300, 900))
    references = [(wide, f"{STORED}uploads/a.png"), (tall, f"{STORED}uploads/b.png")]
    request, _, _ = openai.to_internal(ImageParams(prompt="edit", size="auto"), references, False)
    assert (request.width, request.height) == size_like(wide)
    assert request.width > request.height
    assert request.width % 32 == 0
    assert request.height % 32 == 0
    assert request.references == (f"{STORED}uploads/a.png", f"{STORED}uploads/b.png")


def test_openai_explicit_size_and_options():
    parsed = ImageParams(
        prompt="a cat",
        size="768x512",
        n=2,
        seed=5,
        output_format="webp",
        output_compression=0,
        response_format="url",
    )
    request, output, options = openai.to_internal(parsed, [], False)
    assert (request.width, request.height, request.num_images, request.seed) == (768, 512, 2, 5)
    assert (output.format, output.quality, output.safety_check) == ("webp", 1, False)
    assert options.response_format == "url"


@pytest.mark.parametrize("size", ["big", "1024x", "1024*1024"])
def test_openai_malformed_size(size):
    with pytest.raises(OpenAIError) as caught:
        openai.to_internal(ImageParams(prompt="a cat", size=size), [], False)
    assert caught.value.param == "size"


def test_openai_size_off_the_grid_names_size():
    with pytest.raises(OpenAIError) as caught:
        openai.to_internal(ImageParams(prompt="a cat", size="1000x1000"), [], False)
    assert caught.value.param == "size"
    assert "multiple of 32" in caught.value.message


@pytest.mark.parametrize(
    ("error", "param", "code", "status", "kind"),
    [
        (JobError(kind="input", message="m", field="references[0]"), "image", "invalid_value", 400, None),
        (JobError(kind="input", message="m", field="num_images"), "n", "invalid_value", 400, None),
        (JobError(kind="input", message="m", field="width"), "size", "invalid_value", 400, None),
        (JobError(kind="input", message="m", field="prompt"), "prompt", "invalid_value", 400, None),
        (CANCELLED_ERROR, None, "cancelled", 409, None),
        (INTERNAL_ERROR, None, None, 500, "server_error"),
    ],
)
def test_openai_job_error(error, param, code, status, kind):
    mapped = openai.job_error(error)
    assert (mapped.param, mapped.code, mapped.status) == (param, code, status)
    assert mapped.message == error.message
    assert mapped.kind == (kind or "invalid_request_error")


def test_openai_response():
    job = job_to_render(api="openai")
    body = openai.response(job, rendered(job, inline=True))
    assert body.created == 1_700_000_000
    assert body.size == "768x512"
    assert body.output_format == "png"
    assert [(d.b64_json, d.url, d.revised_prompt) for d in body.data] == [
        ("QUJD0", None, "the prompt used"),
        ("QUJD1", None, "the prompt used"),
    ]


def test_rendered_image_data_uri():
    image = stored(0, 1)
    assert RenderedImage(image, base64="AAA").data_uri == "data:image/png;base64,AAA"


# --- text check, in every dialect

QUOTED = 'a sign that reads "OPEN LATE"'


def checked_job(api: str) -> Job:
    job = job_to_render(api=api, images=2)
    spans = (SpanCheck(text="OPEN LATE", found=False, similarity=0.9375),)
    checks = (TextCheck(score=1.0, spans=spans[:0], detected_text="x"), TextCheck(score=0.9375, spans=spans))
    return job.model_copy(update={"result": job.result.model_copy(update={"text_checks": checks})})


def test_fal_text_check_fields():
    request, output, _ = fal.to_internal(
        TextToImageInput(
            prompt=QUOTED, seed=5, num_images=2, enable_text_check=True, text_check_candidates=6
        ),
        None,
    )
    assert request.seeds == [5, 6, 7, 8, 9, 10] and (output.text_check, output.keep_best) == (True, 2)
    with pytest.raises(ValidationError):
        TextToImageInput(prompt=QUOTED, text_check_candidates=9)
    plain = job_to_render()
    assert "text_checks" not in fal.output(plain, rendered(plain)).model_dump(exclude_none=True)
    job = checked_job("fal")
    checks = fal.output(job, rendered(job)).model_dump()["text_checks"]
    assert [(c["seed"], c["score"]) for c in checks] == [(40, 1.0), (41, 0.9375)]
    assert checks[1]["spans"] == [{"text": "OPEN LATE", "found": False, "similarity": 0.9375}]


def test_runware_text_check_fields():
    request, output, _ = rw(positivePrompt=QUOTED, numberResults=1, textCheck={"candidates": 3})
    assert request.num_images == 3 and (output.text_check, output.keep_best) == (True, 1)
    _, output, _ = rw(positivePrompt=QUOTED, textCheck={})
    assert (output.text_check, output.keep_best) == (True, 0)
    assert not rw(positivePrompt=QUOTED)[1].text_check
    job = checked_job("runware")
    items = runware.items(job, rendered(job), RunwareOptions())
    assert items[1]["textCheck"] == {
        "score": 0.9375,
        "spans": [{"text": "OPEN LATE", "found": False, "similarity": 0.9375}],
        "detectedText": "",
    }
    assert items[0]["textCheck"] == {"score": 1.0, "spans": [], "detectedText": "x"}
    plain = job_to_render()
    assert "textCheck" not in runware.items(plain, rendered(plain), RunwareOptions())[0]


def test_openai_text_check_fields():
    parsed = openai.params({"prompt": QUOTED, "n": 2, "text_check": "true", "text_check_candidates": "4"})
    request, output, _ = openai.to_internal(parsed, [], True)
    assert request.num_images == 4 and (output.text_check, output.keep_best) == (True, 2)
    error = openai_error({"prompt": QUOTED, "text_check_candidates": 0})
    assert (error.param, error.code) == ("text_check_candidates", "invalid_value")
    job = checked_job("openai")
    data = openai.response(job, rendered(job, inline=True)).model_dump(exclude_none=True)["data"]
    assert data[1]["text_check"]["seed"] == 41 and data[1]["text_check"]["score"] == 0.9375
    plain = job_to_render()
    body = openai.response(plain, rendered(plain, inline=True)).model_dump(exclude_none=True)
    assert "text_check" not in body["data"][0]


@pytest.mark.parametrize("dialect", discover(), ids=lambda dialect: dialect.name)
def test_each_dialects_field_table_maps_core_fields(dialect):
    """One table per dialect, core field -> wire name: it builds the request and names fields in errors."""
    core = {field.name for field in dataclasses.fields(GenerationRequest)} | {"text_check_candidates"}
    assert dialect.fields and set(dialect.fields) <= core
