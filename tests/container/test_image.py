"""The container image, built and run for real: the Dockerfile built with podman (CPU torch, a Debian
bookworm base made with debootstrap: no registry is needed), the container started as users start it
(`serve --host 0.0.0.0` by default, data in a named volume), then driven over its port with the fal
Python client (HTTPS: the server's own `--tls self-signed` certificate, trusted through the CA it writes
into the volume) and the OpenAI SDK. It is restarted on the same volume (a new container): jobs and
results from before still answer. compose.yaml is checked as a document, and its `server` started with
podman-compose (its fleet profile is not: no registry here for its PostgreSQL and MinIO images, and no
GPU for its reservation).

Needs root with apt-get (it installs podman, runc, debootstrap and podman-compose when missing), the
Debian archive and PyPI (or the local pip mirrors this machine's pip is configured with, passed into the
build). The base image is kept between runs (GLM_IMAGE_TEST_BASE names another); the image is rebuilt on
every run (podman's layer cache makes an unchanged rebuild quick) and removed again only with
GLM_IMAGE_TEST_RMI=1."""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from helpers.serving import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
BASE = os.environ.get("GLM_IMAGE_TEST_BASE", "localhost/debian:bookworm-slim")
IMAGE = "localhost/glm-image:test"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
KEY = "container-key-1"
USER_HOME = "/home/glm"


def log(message: str) -> None:
    print(f"[container] {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


@dataclass
class Podman:
    conf: Path  # containers.conf: runc with cgroupfs and no default ulimits (crun fails on these machines)

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        result = subprocess.run(
            ["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args[:3])} ... exited {result.returncode}:\n{result.stderr[-4000:]}"
            )
        return result


def ensure_tools() -> None:
    missing = [tool for tool in ("podman", "debootstrap") if shutil.which(tool) is None]
    if not Path("/usr/sbin/runc").exists():
        missing.append("runc")
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"needs {', '.join(missing)} (installed with apt-get as root)")
    log(f"installing {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Waits for the dpkg lock (scripts/test may be installing its own packages meanwhile).
    install = [
        "apt-get",
        "-o",
        "DPkg::Lock::Timeout=300",
        "install",
        "-y",
        "-qq",
        "podman",
        "runc",
        "debootstrap",
    ]
    if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
        update = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-qq"]
        subprocess.run(update, env=env, capture_output=True, timeout=600, check=True)
        subprocess.run(install, env=env, capture_output=True, timeout=600, check=True)


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    ensure_tools()
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\n')
    return Podman(conf)


@pytest.fixture(scope="session")
def base_image(podman: Podman) -> str:
    """Debian bookworm, minbase, from the Debian archive (debian:bookworm-slim without a registry)."""
    if podman("image", "exists", BASE, check=False).returncode == 0:
        return BASE
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="glm-image-rootfs-") as rootfs:
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", rootfs, "http://deb.debian.org/debian"],
            capture_output=True,
            timeout=900,
            check=True,
        )
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        env = {**os.environ, "CONTAINERS_CONF": str(podman.conf)}
        subprocess.run(
            ["podman", "import", "-", BASE],
            stdin=tar.stdout,
            env=env,
            timeout=300,
            check=True,
            capture_output=True,
        )
        assert tar.wait(timeout=60) == 0
    log(f"base {BASE} made in {time.monotonic() - started:.0f} s")
    return BASE


def pip_mirror_args() -> list[str]:
    """This machine's pip configuration (a CA bundle, local wheel directories and indexes) made reachable
    inside the build: build arguments the Dockerfile passes to pip, and read-only volumes for the paths."""
    config = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
    ).stdout
    values: dict[str, str] = {}
    for line in config.splitlines():
        match = re.match(r"[^.]*\.([\w-]+)='(.*)'$", line.strip())
        if match:
            values[match.group(1)] = match.group(2)
    args: list[str] = []
    mounts: set[str] = set()
    cert = values.get("cert") or "/etc/ssl/certs/ca-certificates.crt"
    if Path(cert).is_file():  # the host's CA bundle (a TLS-inspecting proxy's CA, if any, is in it)
        args += ["--build-arg", "PIP_CERT=/run/host-ca.crt", "--volume", f"{cert}:/run/host-ca.crt:ro"]
    for option, variable in (("find-links", "PIP_FIND_LINKS"), ("extra-index-url", "PIP_EXTRA_INDEX_URL")):
        local = []
        for location in values.get(option, "").split():
            path = location.removeprefix("file://")
            if path.startswith("/") and Path(path).exists():
                local.append(location)
                top = "/".join(Path(path).parts[:3])  # /opt/pypi/simple -> /opt/pypi (its files/ too)
                mounts.add(top.replace("//", "/"))
        if local:
            args += ["--build-arg", f"{variable}={' '.join(local)}"]
    for mount in sorted(mounts):
        args += ["--volume", f"{mount}:{mount}:ro"]
    return args


@pytest.fixture(scope="session")
def image(podman: Podman, base_image: str) -> Iterator[str]:
    started = time.monotonic()
    podman(
        "build",
        "--isolation=chroot",
        "--ulimit=nofile=1024:1024",
        "--format=docker",  # OCI images drop HEALTHCHECK
        f"--build-arg=BASE={base_image}",
        f"--build-arg=TORCH_INDEX={CPU_INDEX}",
        "--build-arg=PIP_RETRIES=1",
        *pip_mirror_args(),
        "-t",
        IMAGE,
        str(ROOT),
        timeout=2400,
    )
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
    log(f"image {IMAGE} built in {time.monotonic() - started:.0f} s, {size / 1e9:.2f} GB")
    yield IMAGE
    if os.environ.get("GLM_IMAGE_TEST_RMI") == "1":
        podman("rmi", "-f", IMAGE, check=False)


@dataclass
class Server:
    podman: Podman
    image: str
    volume: str
    port: int
    name: str = ""

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.name = f"glm-image-test-{uuid.uuid4().hex[:8]}"
        self.podman(
            "run", "-d", "--name", self.name, "--runtime", "/usr/sbin/runc", "--network", "host",
            "-v", f"{self.volume}:/data",
            "-e", f"GLM_IMAGE_API_KEYS={KEY}",
            "-e", f"GLM_IMAGE_PORT={self.port}",
            "-e", "GLM_IMAGE_TLS=self-signed",
            "-e", "GLM_IMAGE_TORCH_THREADS=1",
            "-e", "GLM_IMAGE_WORKERS=1",
            self.image,
        )  # fmt: skip
        return self

    def logs(self) -> str:
        result = self.podman("logs", self.name, check=False)
        return (result.stdout + result.stderr)[-6000:]

    def ca(self) -> Path:
        """The CA of the server's self-signed certificate, from the volume (written on its first start)."""
        deadline = time.monotonic() + 120
        while True:
            result = self.podman("exec", self.name, "cat", "/data/tls/ca.pem", check=False)
            if result.returncode == 0 and "BEGIN CERTIFICATE" in result.stdout:
                path = Path(tempfile.mkdtemp(prefix="glm-image-ca-")) / "ca.pem"
                path.write_text(result.stdout)
                return path
            self.assert_running()
            assert time.monotonic() < deadline, f"no /data/tls/ca.pem after 120 s:\n{self.logs()}"
            time.sleep(1)

    def assert_running(self) -> None:
        state = self.podman("inspect", "--format", "{{.State.Running}}", self.name, check=False).stdout
        assert state.strip() == "true", f"the container stopped:\n{self.logs()}"

    def wait_ready(self, ca: Path, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.base_url}/ready", verify=trust(ca), timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            self.assert_running()
            assert time.monotonic() < deadline, f"/ready not 200 after {timeout:.0f} s:\n{self.logs()}"
            time.sleep(1)

    def stop(self) -> int:
        """SIGTERM (podman stop), then the container removed; its exit code."""
        started = time.monotonic()
        self.podman("stop", "-t", "60", self.name, timeout=120, check=False)
        log(f"{self.name} stopped in {time.monotonic() - started:.0f} s")
        code = self.podman("inspect", "--format", "{{.State.ExitCode}}", self.name, check=False).stdout
        self.podman("rm", "-f", "-v", self.name, check=False)  # -v: its anonymous cache volume
        return int(code.strip() or -1)


@pytest.fixture(scope="module")
def volume(podman: Podman) -> Iterator[str]:
    name = f"glm-image-test-{uuid.uuid4().hex[:8]}"
    podman("volume", "create", name)
    yield name
    podman("volume", "rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def servers(podman: Podman, image: str, volume: str) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        podman("rm", "-f", "-v", server.name, check=False)


def trust(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def fal(ca: Path, port: int, *args: str) -> dict:
    env = {
        **os.environ,
        "FAL_RUN_HOST": f"127.0.0.1:{port}",
        "FAL_QUEUE_RUN_HOST": f"127.0.0.1:{port}/queue",
        "FAL_KEY": KEY,
        "SSL_CERT_FILE": str(ca),
    }
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "fal_check.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_image_serves_fal_and_openai_and_keeps_jobs_across_a_restart(
    podman: Podman, image: str, volume: str, servers: list[Server]
) -> None:
    from openai import OpenAI

    inspected = json.loads(podman("image", "inspect", image).stdout)[0]
    config = inspected["Config"]
    assert config["Entrypoint"] == ["glm-image"] and config["Cmd"] == ["serve", "--host", "0.0.0.0"]
    assert config["User"] == "glm"
    assert set(config["Volumes"]) == {"/data", f"{USER_HOME}/.cache/huggingface"}
    assert "/ready" in " ".join(inspected["Healthcheck"]["Test"])  # podman: beside Config

    server = Server(podman, image, volume, free_port()).start()
    servers.append(server)
    started = time.monotonic()
    ca = server.ca()
    server.wait_ready(ca)
    log(f"ready {time.monotonic() - started:.0f} s after the start")
    assert podman("healthcheck", "run", server.name, check=False).returncode == 0, server.logs()

    # Not root: the server's process and what runs in the container.
    assert podman("exec", server.name, "id", "-u").stdout.strip() == "1000"
    status = podman("exec", server.name, "cat", "/proc/1/status").stdout
    uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
    assert uids and all(uid != "0" for uid in uids), status

    # The fal Python client: queue submit, events, result, with the text check (OCR in the image).
    first = fal(ca, server.port, "submit")
    log("fal-client: done")
    assert "Completed" in first["updates"]
    result = first["result"]
    assert result["seed"] == 3 and len(result["images"]) == 1
    (check,) = result["text_checks"]  # RapidOCR ran (the tiny model's noise does not read as OPEN)
    assert check["spans"][0]["text"] == "OPEN" and 0 <= check["score"] <= 1
    assert result["has_nsfw_concepts"] == [False]  # NudeNet ran
    fal_url = result["images"][0]["url"]
    fal_bytes = httpx.get(fal_url, verify=trust(ca), timeout=30).content
    assert fal_bytes[:3] == b"\xff\xd8\xff"  # JPEG

    # The OpenAI SDK.
    # Closed before the stop: an open keep-alive connection holds up uvicorn's graceful shutdown (~23 s).
    with httpx.Client(verify=trust(ca), timeout=120) as http:
        openai = OpenAI(base_url=f"{server.base_url}/v1", api_key=KEY, max_retries=0, http_client=http)
        generated = openai.images.generate(
            prompt="poster", size="96x64", response_format="url", extra_body={"num_inference_steps": 10}
        )
        openai_url = generated.data[0].url
        openai_bytes = http.get(openai_url).content
        assert openai_bytes[:8] == b"\x89PNG\r\n\x1a\n"
        # No key, no service.
        unauthenticated = httpx.post(
            f"{server.base_url}/v1/images/generations", json={"prompt": "x"}, verify=trust(ca)
        )
        assert unauthenticated.status_code == 401

    log("OpenAI SDK: done")
    # A new container on the same volume: the job, its result and both files are still there.
    assert server.stop() == 0, "the server did not exit cleanly on SIGTERM"
    again = Server(podman, image, volume, free_port()).start()
    servers.append(again)
    first_ca = ca.read_text()
    ca = again.ca()
    assert ca.read_text() == first_ca  # the certificate and its CA are kept in the volume
    again.wait_ready(ca)
    before = fal(ca, again.port, "result", first["request_id"])
    assert before["status"] == "Completed"
    assert before["result"]["images"][0]["file_size"] == len(fal_bytes)
    old_port = f"127.0.0.1:{server.port}"
    new_port = f"127.0.0.1:{again.port}"
    assert httpx.get(fal_url.replace(old_port, new_port), verify=trust(ca), timeout=30).content == fal_bytes
    with httpx.Client(verify=trust(ca), timeout=120) as http:
        assert http.get(openai_url.replace(old_port, new_port)).content == openai_bytes
    assert again.stop() == 0


def test_compose_file_declares_the_server_and_the_fleet() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    server = services["server"]
    assert server["build"]["context"] == "."
    devices = server["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert "/data" in " ".join(server["volumes"]) and "huggingface" in " ".join(server["volumes"])
    assert server["env_file"] == ["glm-image.env"]  # the API keys (GLM_IMAGE_API_KEYS)
    assert server["ports"] == ["8000:8000"]
    assert "profiles" not in server  # `docker compose up` starts it alone
    named = set(compose["volumes"])
    for service in services.values():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            assert source.startswith((".", "/")) or source in named, f"undeclared volume {source}"

    fleet = {name for name, service in services.items() if "fleet" in service.get("profiles", [])}
    assert {"postgres", "minio", "worker"} <= fleet
    worker = services["worker"]
    assert _as_list(worker["command"])[0] == "worker"
    assert worker["deploy"]["resources"]["reservations"]["devices"] == devices
    api = services["fleet-server"]
    assert api["command"] == ["serve", "--host", "0.0.0.0", "--workers", "0"]
    assert "deploy" not in api  # the API alone needs no GPU
    for service in (worker, api):
        env = service["environment"]
        assert env["GLM_IMAGE_DATABASE_URL"].startswith("postgresql://")
        assert env["GLM_IMAGE_STORAGE_URL"].startswith("s3://")
        assert env["AWS_ENDPOINT_URL"].startswith("http://minio:9000")


def test_compose_server_starts_with_podman_compose(podman: Podman, image: str, tmp_path: Path) -> None:
    """compose.yaml's `server` as `podman-compose up` starts it (a bridge network, the published port, its
    named volumes and env file). podman-compose 1.0.3 (Debian bookworm's) ignores the GPU reservation;
    the fleet profile is not started: its PostgreSQL and MinIO images would come from a registry."""
    import yaml

    if shutil.which("podman-compose") is None:
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq", "podman-compose"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if os.geteuid() != 0 or subprocess.run(apt, env=env, capture_output=True, timeout=600).returncode:
            pytest.skip("podman-compose is not installed and did not install")
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    port = free_port()
    compose["services"]["server"]["ports"] = [f"127.0.0.1:{port}:8000"]
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(compose))
    (tmp_path / "glm-image.env").write_text(f"GLM_IMAGE_API_KEYS={KEY}\nGLM_IMAGE_TORCH_THREADS=1\n")
    tag = compose["services"]["server"]["image"]
    podman("tag", image, tag)  # what the `build` would make: podman-compose then runs it as it is
    project = f"glmct{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "CONTAINERS_CONF": str(podman.conf.with_name("compose.conf"))}
    podman.conf.with_name("compose.conf").write_text(podman.conf.read_text() + 'runtime = "runc"\n')

    def compose_cmd(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        command = ["podman-compose", "-p", project, "-f", str(tmp_path / "compose.yaml"), *args]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)

    try:
        up = compose_cmd("up", "-d", "server")
        assert up.returncode == 0, up.stderr[-3000:]
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, compose_cmd("logs", "server").stdout[-4000:]
            time.sleep(1)
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/images/generations",
            headers={"authorization": f"Bearer {KEY}"},
            json={"prompt": "x", "size": "64x64", "num_inference_steps": 5},
            timeout=120,
        )
        assert answer.status_code == 200 and answer.json()["data"][0]["b64_json"], answer.text
    finally:
        compose_cmd("down", "-v", timeout=300)
        for volume in compose["volumes"]:
            podman("volume", "rm", "-f", f"{project}_{volume}", check=False)
        podman("network", "rm", "-f", f"{project}_default", check=False)
        podman("untag", image, tag, check=False)


def _as_list(value: object) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
