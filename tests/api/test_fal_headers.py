"""fal's platform headers on the in-process app: values fal would refuse are a 400 `bad_request` whose
type is mirrored in `X-Fal-Error-Type`; good ones are taken in any case. (Their effect — priority order,
start timeouts — with the real client: tests/e2e/test_fal_platform_headers.py.)"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

T2I = "fal-ai/glm-image"
SMALL = {"image_size": {"width": 96, "height": 64}, "num_inference_steps": 10}


@pytest.mark.parametrize("path", [f"/{T2I}", f"/queue/{T2I}"], ids=["sync", "queue"])
@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-fal-request-timeout", "0"),
        ("x-fal-request-timeout", "-3"),
        ("x-fal-request-timeout", "soon"),
        ("x-fal-request-timeout", "inf"),
        ("x-fal-queue-priority", "urgent"),
    ],
)
def test_a_bad_platform_header_is_a_bad_request(
    fal_app: TestClient, path: str, header: str, value: str
) -> None:
    response = fal_app.post(path, json={"prompt": "x", **SMALL}, headers={header: value})
    assert response.status_code == 400
    body = response.json()
    assert body["error_type"] == "bad_request" and header in body["detail"] and value in body["detail"]
    assert response.headers["x-fal-error-type"] == "bad_request"
    assert "x-fal-request-timeout-type" not in response.headers


def test_good_platform_headers_are_taken(fal_app: TestClient) -> None:
    headers = {"x-fal-queue-priority": "LOW", "x-fal-request-timeout": "120.5"}
    submitted = fal_app.post(f"/queue/{T2I}", json={"prompt": "patient", **SMALL}, headers=headers)
    assert submitted.status_code == 200 and isinstance(submitted.json()["queue_position"], int)
    job = fal_app.app.state.services.store.get(submitted.json()["request_id"])
    assert job.priority == "low" and job.start_by == pytest.approx(job.created_at + 120.5)
    result = fal_app.post(f"/{T2I}", json={"prompt": "in time", **SMALL}, headers=headers)
    assert result.status_code == 200 and result.json()["images"]
