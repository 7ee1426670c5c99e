"""Behind a reverse proxy, response URLs use the configured public URL."""

from __future__ import annotations

from helpers.app import app_settings, serve_app

PUBLIC = "https://images.example.com/glm"


def test_public_url_in_responses(engine, tmp_path, model_cache) -> None:
    settings = app_settings(tmp_path, model_cache, public_url=f"{PUBLIC}/")
    for client in serve_app(settings, engine):
        body = {"prompt": "x", "image_size": {"width": 64, "height": 64}, "num_inference_steps": 10}
        submitted = client.post("/queue/fal-ai/glm-image", json=body).json()
        assert submitted["status_url"].startswith(f"{PUBLIC}/queue/fal-ai/glm-image/")
        assert submitted["response_url"].startswith(f"{PUBLIC}/queue/fal-ai/glm-image/requests/")
        result = client.post("/fal-ai/glm-image", json=body).json()
        url = result["images"][0]["url"]
        assert url.startswith(f"{PUBLIC}/files/")
        assert client.get(url.removeprefix(PUBLIC)).status_code == 200
