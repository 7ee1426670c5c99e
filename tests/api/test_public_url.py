"""Behind a reverse proxy, response URLs use the configured public URL (in-process app)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from glm_image_server.api.app import create_app
from glm_image_server.settings import Settings


def test_public_url_in_responses(engine, tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, public_url="https://images.example.com/glm/")
    with TestClient(create_app(settings, engine=engine)) as client:
        body = {"prompt": "x", "image_size": {"width": 64, "height": 64}, "num_inference_steps": 10}
        submitted = client.post("/queue/fal-ai/glm-image", json=body).json()
        assert submitted["status_url"].startswith("https://images.example.com/glm/queue/fal-ai/glm-image/")
        result = client.post("/fal-ai/glm-image", json=body).json()
        url = result["images"][0]["url"]
        assert url.startswith("https://images.example.com/glm/files/")
        assert client.get(url.removeprefix("https://images.example.com/glm")).status_code == 200
