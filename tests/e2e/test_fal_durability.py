"""Jobs and webhooks survive a SIGKILL of the server (and so of its worker); webhooks are retried until
accepted."""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict

import fal_client
import httpx
from helpers.serving import ServerProcess
from helpers.waiting import holds, wait_for

T2I = "fal-ai/glm-image"
SMALL = {"image_size": {"width": 96, "height": 64}, "num_inference_steps": 10}


def statuses(client: httpx.Client, ids: list[str]) -> dict[str, dict]:
    return {i: client.get(f"/queue/{T2I}/requests/{i}/status").json() for i in ids}


def test_sigkill_mid_run_loses_nothing(tmp_path, model_cache, web) -> None:
    hooks: list[dict] = []
    web.routes["/hook"] = lambda handler: (200, b"ok", {})
    server = ServerProcess(tmp_path / "data", model_cache).start()
    client = httpx.Client(base_url=server.base_url, timeout=60)
    try:
        body = {"image_size": {"width": 256, "height": 256}, "num_inference_steps": 10}
        ids = [
            client.post(
                f"/queue/{T2I}", params={"fal_webhook": web.url("/hook")}, json={"prompt": f"job {n}", **body}
            ).json()["request_id"]
            for n in range(10)
        ]

        def two_done_one_running() -> tuple[list[str], list[str]] | None:
            now = statuses(client, ids)
            done = [i for i in ids if now[i]["status"] == "COMPLETED"]
            running = [i for i in ids if now[i]["status"] == "IN_PROGRESS"]
            # A worker holds one of them now, as the store says (a job between its stages is in progress
            # but held by none; /ready's worker list is as old as the last heartbeat).
            jobs = client.get("/ops").json()["jobs"]
            held = any(job["worker_id"] and job["status"] == "running" for job in jobs)
            return (done, running) if len(done) >= 2 and running and held else None

        done, running = wait_for(two_done_one_running, 120, "two jobs done and a third part-way", 0.05)
        before = {i: client.get(f"/queue/{T2I}/requests/{i}").json() for i in done}
        server.kill()

        server.start()  # same port, same data directory

        def all_completed() -> dict[str, dict] | None:
            now = statuses(client, ids)
            return now if all(s["status"] == "COMPLETED" for s in now.values()) else None

        now = wait_for(all_completed, 180, "every job to complete after the restart", 0.2)
        assert all("error" not in s for s in now.values()), now
        assert "queued again" in server.log()

        results = {i: client.get(f"/queue/{T2I}/requests/{i}").json() for i in ids}
        for result in results.values():
            (image,) = result["images"]
            assert httpx.get(image["url"]).status_code == 200
        for i, earlier in before.items():  # finished before the kill: the very same result
            assert results[i] == earlier
        # The interrupted job, run again, made the images its seed makes.
        interrupted = results[running[0]]
        fresh = client.post(
            f"/{T2I}", json={"prompt": interrupted["prompt"], "seed": interrupted["seed"], **body}
        )
        fresh_bytes = httpx.get(fresh.json()["images"][0]["url"]).content
        assert httpx.get(interrupted["images"][0]["url"]).content == fresh_bytes

        # Webhooks: every request delivered; a repeat (a kill between POST and bookkeeping) is identical.
        def hooked() -> set[str]:
            return {json.loads(body)["request_id"] for _, path, body in web.received if path == "/hook"}

        wait_for(lambda: len(hooked()) == 10, 30, "a webhook for each of the ten requests", 0.1)
        for _method, path, raw in web.received:
            if path == "/hook":
                hooks.append(json.loads(raw))
        by_id = defaultdict(list)
        for hook in hooks:
            by_id[hook["request_id"]].append(hook)
        assert set(by_id) == set(ids)
        for i, deliveries in by_id.items():
            assert all(d == deliveries[0] for d in deliveries)
            assert deliveries[0]["status"] == "OK" and deliveries[0]["payload"] == results[i]
    finally:
        client.close()
        server.stop()


def test_webhook_retried_until_accepted(fal_server, fal_http, web) -> None:
    attempts: Counter[str] = Counter()
    lock = threading.Lock()

    def flaky(handler) -> tuple[int, bytes, dict]:
        with lock:
            request_id = json.loads(web.received[-1][2])["request_id"]
            attempts[request_id] += 1
            return (500, b"try again", {}) if attempts[request_id] <= 2 else (200, b"ok", {})

    web.routes["/hook"] = flaky
    ok = fal_client.submit(T2I, arguments={"prompt": "hooked", **SMALL}, webhook_url=web.url("/hook"))
    bad = fal_http.post(
        "/queue/fal-ai/glm-image/image-to-image",
        params={"fal_webhook": web.url("/hook")},
        json={"prompt": "x", "image_urls": ["http://127.0.0.1:9/none.png"], **SMALL},
    ).json()
    ids = {ok.request_id, bad["request_id"]}
    wait_for(lambda: all(attempts[i] >= 3 for i in ids), 60, "three attempts at each webhook", 0.1)
    # No further deliveries once one was accepted (1.5 s: more than the next retry delays).
    holds(lambda: {i: attempts[i] for i in ids} == {i: 3 for i in ids}, 1.5, "three attempts each", 0.1)

    accepted = {}
    for _method, _path, raw in web.received:
        hook = json.loads(raw)
        accepted[hook["request_id"]] = hook  # the last attempt for each is the accepted one
    good = accepted[ok.request_id]
    assert good["status"] == "OK" and good["error"] is None and good["gateway_request_id"] == ok.request_id
    assert good["payload"] == fal_client.result(T2I, ok.request_id)
    failed = accepted[bad["request_id"]]
    assert failed["status"] == "ERROR" and "could not fetch" in failed["error"]
    assert failed["payload"]["detail"][0]["loc"] == ["body", "image_urls", 0]
