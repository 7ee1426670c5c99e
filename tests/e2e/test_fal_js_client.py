"""fal's JavaScript client (@fal-ai/client from npm, tests/js), unmodified, against `glm-image serve`
with default settings (plain HTTP, an API key, loopback URLs refused): its only setup is
`fal.config({ proxyUrl: { url, when: "always" }, credentials })`, fal's proxy convention, which the
server answers itself (api/fal/proxy.py). The scenarios are in tests/js/fal_proxy.mjs."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.images import download, png_bytes
from helpers.keys import PLAIN_KEY
from helpers.node import run_node

SCRIPT = "fal_proxy.mjs"


def scenario(server, name: str, **env: str) -> dict:
    (answer,) = run_node(
        SCRIPT, {"SERVER_URL": server.base_url, "FAL_CREDENTIALS": PLAIN_KEY, "SCENARIO": name, **env}
    )
    return answer


def check_image(image: dict, size: tuple[int, int] = (96, 64)) -> None:
    data, decoded = download(image["url"])
    assert decoded.size == size == (image["width"], image["height"])
    assert image["file_size"] == len(data)


def test_run_and_a_wrong_key(plain_server) -> None:
    answer = scenario(plain_server, "run")
    assert answer["data"]["seed"] == 7 and answer["requestId"]
    (image,) = answer["data"]["images"]
    assert image["url"].startswith(plain_server.base_url + "/files/")
    check_image(image)

    refused = scenario(plain_server, "wrong-key")
    assert refused["refused"] and refused["status"] == 401
    assert "API key" in refused["body"]["detail"]


@pytest.mark.parametrize("mode", ["polling", "streaming"])
def test_subscribe_with_logs(plain_server, mode: str) -> None:
    """Streaming: the client appends each event's logs to what it has; it must end with each line once."""
    answer = scenario(plain_server, mode)
    assert answer["images"] == 1
    statuses = answer["statuses"]
    assert "IN_PROGRESS" in statuses and statuses[-1] == "COMPLETED"
    assert statuses.index("IN_PROGRESS") < statuses.index("COMPLETED")
    lines = [(log["timestamp"], log["message"]) for log in answer["logs"]]
    assert len(lines) == len(set(lines)), "a log line came twice"
    assert answer["logs"] == answer["server_logs"]
    messages = [log["message"] for log in answer["logs"]]
    assert any(m.startswith("DiT: 100/100 steps") for m in messages)


def test_queue_submit_status_result_cancel(plain_server) -> None:
    answer = scenario(plain_server, "queue")
    assert answer["submitted"]["status"] == "IN_QUEUE"
    assert answer["queued_status"]["status"] == "IN_QUEUE"
    assert answer["queued_status"]["queue_position"] >= 1  # behind another queued one
    assert answer["cancelled"]["status"] == "COMPLETED"
    assert answer["cancelled"]["error_type"] == "request_cancelled"
    assert answer["invalid"]["error"] == 422
    assert answer["invalid"]["detail"][0]["loc"] == ["body", "image_urls"]
    assert answer["status"]["status"] == "COMPLETED" and answer["status"]["logs"]
    result = answer["result"]
    assert result["requestId"] == answer["status"]["request_id"] and result["data"]["seed"] == 3
    check_image(result["data"]["images"][0])


def test_upload_then_edit_it(plain_server, tmp_path: Path) -> None:
    """`fal.storage.upload` puts the file on this server; the edit reads it back as its reference (the
    server's own file: no fetch over the network, which the default URL rules would refuse)."""
    picture = tmp_path / "reference.png"
    picture.write_bytes(png_bytes((120, 90), (20, 40, 220)))
    answer = scenario(plain_server, "upload", PNG_PATH=str(picture))
    assert answer["uploaded"].startswith(plain_server.base_url + "/files/upload-")
    _data, stored = download(answer["uploaded"])
    assert stored.size == (120, 90) and stored.getpixel((3, 3)) == (20, 40, 220)
    for edit in (answer["edit"], answer["automatic"]):
        check_image(edit["images"][0])


def test_edit_of_a_previous_result(plain_server) -> None:
    answer = scenario(plain_server, "chain")
    assert answer["first"].startswith(plain_server.base_url + "/files/")
    check_image(answer["edit"]["images"][0])
