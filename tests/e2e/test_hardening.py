"""Bad luck and hostile clients against a real `glm-image serve` on loopback: a full disk mid-job, a
reference URL that drips, 50 MB bodies, oversized heads and URLs, a second server on the same data
directory, slow headers and too many connections. Each is bounded in time; the server keeps serving
through all of them."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from helpers.runware import task
from helpers.serving import ServerProcess, dripping
from helpers.waiting import wait_for
from websockets.sync.client import connect

KEY = "hardening-key-1"
QUEUE = "/queue/fal-ai/glm-image"
SMALL = {"image_size": {"width": 64, "height": 64}, "num_inference_steps": 10, "enable_safety_checker": False}


def status(client: httpx.Client, request_id: str) -> str:
    return client.get(f"{QUEUE}/requests/{request_id}/status").json()["status"]


def submit(client: httpx.Client, app: str = "", **fields) -> str:
    response = client.post(f"{QUEUE}{app}", json={"prompt": "a sign that reads 'OK'", **SMALL, **fields})
    response.raise_for_status()
    return response.json()["request_id"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path):
    env = {
        "GLM_IMAGE_FETCH_TIMEOUT_S": "8",
        "GLM_IMAGE_HEADER_TIMEOUT_S": "2",
        "GLM_IMAGE_MAX_CONNECTIONS_PER_CLIENT": "40",
    }
    server = ServerProcess(
        tmp_path_factory.mktemp("hard") / "data", model_cache, env=env, args=("--api-key", KEY)
    )
    server.start()
    with httpx.Client(
        base_url=server.base_url, headers={"authorization": f"Key {KEY}"}, timeout=60
    ) as client:
        server.client = client
        yield server
    server.stop()


def queue_wait_s(client: httpx.Client, request_id: str) -> float:
    logs = client.get(f"{QUEUE}/requests/{request_id}/status", params={"logs": 1}).json()["logs"]
    started = next(e["message"] for e in logs if e["message"].startswith("Started after"))
    return float(re.search(r"after ([0-9.]+) s", started).group(1))


def test_a_dripping_reference_fails_at_its_deadline_while_other_jobs_run(server, web):
    web.routes["/drip.png"] = dripping(0.5, total_s=30)
    slow = submit(server.client, "/image-to-image", image_urls=[web.url("/drip.png")])
    wait_for(lambda: status(server.client, slow) == "IN_PROGRESS", 30, "the slow job to start")
    quick = submit(server.client, seed=7)
    wait_for(lambda: status(server.client, quick) == "COMPLETED", 60, "the unrelated job")
    assert queue_wait_s(server.client, quick) < 4  # it ran at once, not after the 8 s fetch deadline
    assert server.client.get(f"{QUEUE}/requests/{quick}").status_code == 200
    wait_for(lambda: status(server.client, slow) == "COMPLETED", 30, "the slow job to fail")
    result = server.client.get(f"{QUEUE}/requests/{slow}")
    assert result.status_code == 422
    assert "timed out" in result.json()["detail"][0]["msg"]


def rss_mb(pid: int) -> float:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def post_huge(port: int, path: str, size: int, key: str | None) -> int:
    """POST `size` bytes, streaming until the server answers; returns the status it answered."""
    auth = f"authorization: Bearer {key}\r\n" if key else ""
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\n{auth}content-length: {size}\r\n\r\n"
    chunk, sent = b"x" * 65536, 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        deadline = time.monotonic() + 30
        while sent < size and time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sent += sock.send(chunk)
            except OSError:
                break
        answer = sock.recv(4096)
    return int(answer.split()[1])


@pytest.mark.parametrize(
    ("path", "key", "expected"),
    [
        ("/fal-ai/glm-image", None, 401),
        ("/v1/images/generations", None, 401),
        ("/v1", None, 413),
        ("/fal-ai/glm-image", KEY, 413),
        ("/v1", KEY, 413),
    ],
)
def test_a_50_mb_body_is_refused_without_being_read(server, path, key, expected):
    before = rss_mb(server.process.pid)
    assert post_huge(server.port, path, 50 * 2**20, key) == expected
    assert rss_mb(server.process.pid) - before < 20
    assert server.client.get("/health").status_code == 200


def test_slow_headers_are_cut_off_and_connections_per_address_are_capped(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\nhost:")
        started = time.monotonic()
        answer = slow.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408")
        assert 1.5 < time.monotonic() - started < 6
    for _ in range(45):  # more WebSockets, one after another, than one address may hold at once
        with connect(f"ws://127.0.0.1:{server.port}/v1", open_timeout=10) as socket_:
            socket_.send('[{"taskType": "ping", "ping": true}]')
            assert "taskType" in socket_.recv(timeout=10)  # answered (here: authenticate first)
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(40)]
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as extra:
            extra.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            assert extra.recv(4096).startswith(b"HTTP/1.1 503")
    finally:
        for sock in idle:
            sock.close()
    wait_for(
        lambda: httpx.get(f"{server.base_url}/health").status_code == 200, 10, "the server to serve again"
    )


def send_head(port: int, head: bytes) -> tuple[int, dict[str, str], dict]:
    """Send a request head (as much of it as the server takes before it answers); the answer's status,
    headers and JSON body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for start in range(0, len(head), 65536):
            if select.select([sock], [], [], 0)[0]:
                break  # answered (and closing) before the rest was sent
            try:
                sock.sendall(head[start : start + 65536])
            except OSError:
                break
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head_part, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head_part.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def test_oversized_heads_and_urls_are_refused_in_the_dialects_format_before_they_are_buffered(server):
    """A head past 64 KiB is a 431 and a request line past 16 KiB a 414, each in the format of the
    dialect whose path was asked, and closed; a request the parser cannot read is a JSON 400. Eight
    connections sending 8 MB heads leave the server's memory where it was."""
    big_header = b"x-big: " + b"a" * (100 * 1024) + b"\r\n"
    fal = b"POST /queue/fal-ai/glm-image HTTP/1.1\r\nhost: x\r\n" + big_header + b"\r\n"
    status, headers, body = send_head(server.port, fal)
    assert (status, headers["connection"]) == (431, "close") and "headers are over" in body["detail"]
    long_url = b"GET /v1/images/generations?q=" + b"a" * (20 * 1024) + b" HTTP/1.1\r\nhost: x\r\n\r\n"
    status, _headers, body = send_head(server.port, long_url)
    assert status == 414 and "request line is over" in body["error"]["message"]
    status, _headers, body = send_head(server.port, b"NOT HTTP AT ALL\r\n\r\n")
    assert status == 400 and "not a valid HTTP/1.1 request" in body["detail"]
    blank_first = b"\r\n\r\n" + fal  # blank lines before a request line are skipped, not a way around
    assert send_head(server.port, blank_first)[0] == 431

    before = rss_mb(server.process.pid)
    huge = b"GET /health HTTP/1.1\r\nx-huge: " + b"a" * (8 * 2**20)
    with ThreadPoolExecutor(8) as pool:
        assert {answer[0] for answer in pool.map(lambda _: send_head(server.port, huge), range(8))} == {431}
    assert rss_mb(server.process.pid) - before < 20
    assert server.client.get("/health").status_code == 200


def test_a_second_server_on_the_same_data_directory_exits_and_touches_nothing(server, model_cache, tmp_path):
    running = submit(server.client, image_size={"width": 256, "height": 256}, num_inference_steps=40)
    wait_for(lambda: status(server.client, running) == "IN_PROGRESS", 30, "the job to start")
    second = ServerProcess(server.data_dir, model_cache)
    second.log_path = tmp_path / "second.log"
    with pytest.raises(RuntimeError) as exited:
        second.start(timeout=60)
    assert "server exited with 2" in str(exited.value)
    assert f"another glm-image serve (pid {server.process.pid})" in second.log()
    assert "tiny" not in second.log()  # it stopped before saying which model it would load
    wait_for(lambda: status(server.client, running) == "COMPLETED", 60, "the first server's job")
    logs = server.client.get(f"{QUEUE}/requests/{running}/status", params={"logs": 1}).json()["logs"]
    assert not any("attempt 2" in entry["message"] for entry in logs)


# --- a full disk


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave_bytes: int) -> Path:
    """A file that takes the disk's space but `leave_bytes`."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with filler.open("wb") as out:
        out.write(b"\0" * max(0, free - leave_bytes))
    return filler


def test_a_full_disk_fails_the_job_and_the_server_recovers_by_itself(small_disk, model_cache):
    env = {"GLM_IMAGE_MIN_FREE_DISK_MB": "2"}  # the filler leaves 1.5 MB: low, with room for the database
    server = ServerProcess(small_disk / "data", model_cache, env=env)
    server.log_path = small_disk.parent / "server.log"  # off the small disk
    server.start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            big = submit(  # its PNG of noise (~3 MB) will not fit in what the filler leaves
                client,
                image_size={"width": 1024, "height": 1024},
                num_inference_steps=10,
                output_format="png",
            )
            wait_for(lambda: status(client, big) == "IN_PROGRESS", 60, "the big job to start")
            filler = fill(small_disk, 1536 * 1024)  # room for the database's writes, not for the image

            # While the disk is full (free space is read at most once a second): /ready says why, and
            # each dialect answers in its own format.
            wait_for(lambda: client.get("/ready").status_code == 503, 10, "/ready to see the full disk")
            fal = client.post(QUEUE, json={"prompt": "x", **SMALL})
            assert fal.status_code == 507 and "low disk space" in fal.json()["detail"]
            runware = client.post("/v1", json=[task()])
            assert runware.status_code == 507 and runware.json()["errors"][0]["code"] == "insufficientStorage"
            openai = client.post("/v1/images/generations", json={"prompt": "x", "size": "64x64"})
            assert openai.status_code == 507 and openai.json()["error"]["code"] == "insufficient_storage"
            ready = client.get("/ready")
            assert ready.status_code == 503 and "low disk space" in " ".join(ready.json()["problems"])

            wait_for(lambda: status(client, big) == "COMPLETED", 300, "the big job to end")
            failed = client.get(f"{QUEUE}/requests/{big}")
            assert failed.status_code == 500 and "disk is full" in failed.json()["detail"]
            assert not list((small_disk / "data" / "files").glob(".*.partial"))

            filler.unlink()
            wait_for(lambda: client.get("/ready").status_code == 200, 20, "/ready once space is back")
            after = submit(client)
            wait_for(lambda: status(client, after) == "COMPLETED", 60, "a job after the disk recovered")
            assert client.get(f"{QUEUE}/requests/{after}").status_code == 200
    finally:
        server.stop()
        with contextlib.suppress(FileNotFoundError):
            (small_disk / "filler").unlink()


def test_sigterm_drains_sync_requests_then_answers_503_in_their_format(model_cache, tmp_path):
    """SIGTERM while two sync requests and a stream wait: the one whose job finishes within the drain gets
    its images; the other, still running when the drain ends, a 503 with Retry-After in its dialect's
    format, never a plain-text 500; the stream ends with an error event; the server then exits."""
    server = ServerProcess(tmp_path / "data", model_cache, env={"GLM_IMAGE_SHUTDOWN_DRAIN_S": "4"}).start()
    quick = {"prompt": "a sign", **SMALL}
    slow = {"prompt": "a sign", "size": "1024x1024", "n": 2}
    streamed = {"prompt": "a sign", "size": "64x64", "stream": True}

    def stream(client: httpx.Client) -> str:
        with client.stream("POST", "/v1/images/generations", json=streamed) as answer:
            return answer.read().decode()

    with httpx.Client(base_url=server.base_url, timeout=60) as client, ThreadPoolExecutor(3) as pool:
        answers = [pool.submit(client.post, "/fal-ai/glm-image", json=quick)]
        wait_for(lambda: client.get("/ops").json()["jobs"], 30, "the quick job to be queued")
        answers.append(pool.submit(client.post, "/v1/images/generations", json=slow))
        wait_for(lambda: len(client.get("/ops").json()["jobs"]) == 2, 30, "the slow job to be queued")
        answers.append(pool.submit(stream, client))
        wait_for(lambda: len(client.get("/ops").json()["jobs"]) == 3, 30, "the streamed job to be queued")
        server.process.send_signal(signal.SIGTERM)
        finished, refused, events = (answer.result(timeout=30) for answer in answers)
    assert finished.status_code == 200 and len(finished.json()["images"]) == 1
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1, refused.text
    assert "shutting down" in refused.json()["error"]["message"]
    last = events.strip().split("\n\n")[-1]  # a stream open at the end of the drain ends with an error event
    assert last.startswith("event: error") and "service_unavailable" in last and "shutting down" in last
    assert server.process.wait(30) in (0, -signal.SIGTERM)  # uvicorn ends with the signal it got
    assert "Exception in ASGI application" not in server.log()
