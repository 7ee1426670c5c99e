"""Runware's details on a real server: a WebSocket client that reconnects with its connectionSessionUUID
gets the results that finished while it was away (and another key cannot take them), and getResponse
hands out each image of a task as it finishes, never twice. (Across API replicas on PostgreSQL:
tests/e2e/test_fleet.py.)"""

from __future__ import annotations

import json
import uuid

import httpx
from helpers.keys import RUNWARE_KEY, RUNWARE_OTHER_KEY
from helpers.runware import task
from helpers.waiting import wait_for
from websockets.sync.client import ClientConnection, connect

PONG = {"data": [{"taskType": "ping", "pong": True}]}


def authenticate(socket: ClientConnection, key: str, session: str | None = None) -> str:
    """The connectionSessionUUID the server answers an authentication with (resuming `session`)."""
    auth = {"taskType": "authentication", "apiKey": key}
    socket.send(json.dumps([auth | ({"connectionSessionUUID": session} if session else {})]))
    (reply,) = json.loads(socket.recv(timeout=30))["data"]
    return reply["connectionSessionUUID"]


def next_after_ping(socket: ClientConnection) -> list[dict]:
    """The messages that arrive before the answer to a ping sent now (results pushed meanwhile)."""
    socket.send(json.dumps([{"taskType": "ping", "ping": True}]))
    before = []
    while (message := json.loads(socket.recv(timeout=30))) != PONG:
        before.append(message)
    return before


def poll(rest: httpx.Client, task_uuid: str) -> list[dict]:
    return rest.post("", json=[{"taskType": "getResponse", "taskUUID": task_uuid}]).json()["data"]


def finished(rest: httpx.Client, task_uuid: str) -> list[dict] | None:
    """The task's results once all are there (None before, also while its submission is under way)."""
    answer = rest.post("", json=[{"taskType": "getResponse", "taskUUID": task_uuid}]).json()
    items = answer.get("data", [{"status": "unknown"}])
    return items if all(item["status"] == "success" for item in items) else None


def test_a_reconnect_with_the_session_gets_what_finished_while_away(runware_server) -> None:
    url, rest = f"ws://127.0.0.1:{runware_server.port}/v1", runware_server.rest
    job = task(numberResults=2, steps=20)
    with connect(url) as socket:
        session = authenticate(socket, RUNWARE_KEY)
        socket.send(json.dumps([job]))  # then the socket closes before any result is ready
    results = wait_for(
        lambda: finished(rest, job["taskUUID"]), 120, "the task to finish with nobody connected"
    )
    assert len(results) == 2

    with connect(url) as thief:  # another key with the same session UUID: a new session, nothing in it
        assert authenticate(thief, RUNWARE_OTHER_KEY, session) != session
        assert next_after_ping(thief) == []
    with connect(url) as unknown:  # an unknown session is a new one
        fresh = str(uuid.uuid4())
        assert authenticate(unknown, RUNWARE_KEY, fresh) not in (fresh, session)

    with connect(url) as again:
        assert authenticate(again, RUNWARE_KEY, session) == session
        pushed = [json.loads(again.recv(timeout=30))["data"] for _ in results]
        assert all(len(items) == 1 for items in pushed)  # one message per image
        assert sorted(items[0]["imageUUID"] for items in pushed) == sorted(i["imageUUID"] for i in results)
        assert {items[0]["imageURL"] for items in pushed} == {i["imageURL"] for i in results}
    with connect(url) as once_more:  # delivered now: a later resume has nothing left to send
        assert authenticate(once_more, RUNWARE_KEY, session) == session
        assert next_after_ping(once_more) == []


def test_a_resumed_session_also_gets_a_task_still_running(runware_server) -> None:
    url = f"ws://127.0.0.1:{runware_server.port}/v1"
    job = task(steps=40)
    with connect(url) as socket:
        session = authenticate(socket, RUNWARE_KEY)
        socket.send(json.dumps([job]))
    # A session can be resumed once a task of it is recorded (just after the task is): reconnect until then.

    def resumed() -> dict | None:
        with connect(url) as again:
            if authenticate(again, RUNWARE_KEY, session) != session:
                return None
            (item,) = json.loads(again.recv(timeout=120))["data"]
            return item

    item = wait_for(resumed, 30, "the session to become resumable", 0.05)
    assert item["taskUUID"] == job["taskUUID"] and item["status"] == "success"


def test_get_response_hands_out_each_image_as_it_finishes(runware_server) -> None:
    """The images of a task finish one by one (the DiT and VAE run image by image): getResponse lists the
    finished ones while the rest are still `processing`, each image once, with the same imageUUID and
    file it has in the final answer."""
    rest = runware_server.rest
    job = task(numberResults=2, steps=60, width=128, height=128, deliveryMethod="async", outputFormat="PNG")
    assert rest.post("", json=[job]).json()["data"][0]["status"] == "processing"
    seen: list[list[dict]] = []

    def all_succeeded() -> bool:
        items = poll(rest, job["taskUUID"])
        assert len(items) == 2  # one item per image: processing or its result
        seen.append(items)
        return all(item["status"] == "success" for item in items)

    wait_for(all_succeeded, 180, "both images", 0.05)
    partial = [items for items in seen if [i["status"] for i in items] == ["success", "processing"]]
    assert partial, "the first image was never handed out before the second was done"
    first = partial[0][0]
    final = seen[-1]
    assert len({item["imageUUID"] for item in final}) == 2
    assert final[0] == first  # the same result, not a second one
    assert httpx.get(first["imageURL"]).status_code == 200
