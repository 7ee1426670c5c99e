"""@runware/sdk-js (from the npm registry, tests/js) against the Runware server over its WebSocket, as a
user points it at us (its `url` option): an inference with two results, and an upload used as the
reference of an edit."""

from __future__ import annotations

from helpers.images import data_uri, download, png_bytes
from helpers.keys import RUNWARE_KEY
from helpers.node import run_node


def test_the_runware_js_sdk_over_the_websocket(runware_server) -> None:
    env = {
        "RUNWARE_URL": f"ws://127.0.0.1:{runware_server.port}/v1",
        "RUNWARE_KEY": RUNWARE_KEY,
        "REFERENCE": data_uri(png_bytes((120, 90), (20, 160, 40))),
    }
    steps = {line["step"]: line["value"] for line in run_node("runware_sdk.mjs", env, timeout=600)}

    two = steps["inference"]
    assert len(two) == 2 and len({image["imageUUID"] for image in two}) == 2
    assert len({image["taskUUID"] for image in two}) == 1 and len({image["seed"] for image in two}) == 2
    for image in two:
        assert image["status"] == "success" and image["cost"] > 0 and image["NSFWContent"] is False
        _, picture = download(image["imageURL"])
        assert picture.format == "PNG" and picture.size == (128, 128)

    upload = steps["upload"]
    assert upload["taskType"] == "imageUpload" and upload["imageUUID"]
    assert download(upload["imageURL"])[1].size == (120, 90)

    (edit,), (plain,) = steps["edit"], steps["no-reference"]
    assert edit["seed"] == plain["seed"] == 1234
    assert download(edit["imageURL"])[0] != download(plain["imageURL"])[0]  # the reference was used
