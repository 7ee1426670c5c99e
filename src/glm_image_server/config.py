"""One settings object: environment variables GLM_IMAGE_*, overridden by CLI flags. Every tunable lives
here with its default and description; the CLI's flags and docs/settings.md are generated from these fields
(cli/flags.py), so they cannot drift apart. Components take a frozen `Slice` of the fields they read."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .keys import no_empty_keys
from .worker.plan import checked_workers

# NudeNet's labels for exposed anatomy (safety.py); kept here so settings import nothing heavy.
EXPOSED = ("FEMALE_GENITALIA", "MALE_GENITALIA", "FEMALE_BREAST", "BUTTOCKS", "ANUS")
DEFAULT_LABELS = tuple(f"{part}_EXPOSED" for part in EXPOSED)


def _split_commas(value: object) -> object:
    return [item.strip() for item in value.split(",") if item.strip()] if isinstance(value, str) else value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]  # a list, comma-separated in env


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GLM_IMAGE_", extra="ignore")

    # The model.
    model: str = Field(
        "tiny",
        description="'tiny' (random-weight demo model, built offline), a Hugging Face id such as "
        "zai-org/GLM-Image, or a local directory in diffusers format",
    )
    device: Literal["auto", "cuda", "cpu", "mps"] = Field(
        "auto", description="where the model runs; auto: CUDA, then MPS, then the CPU"
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto: bfloat16 on a GPU, float32 on the CPU"
    )
    cpu_offload: bool = Field(False, description="the older name of offload=model (still works)")
    quantize: Literal["none", "int8", "fp8"] = Field(
        "none",
        description="the AR language model's and the DiT's weights in int8 (any device) or fp8 (CUDA 8.9+), "
        "through torchao; unless given, `serve` chooses from the GPUs' memory (`glm-image plan`)",
    )
    offload: Literal["none", "model", "group"] = Field(
        "none",
        description="model: whole components to the GPU in turn; group: layers streamed; unless given, "
        "`serve` chooses it from the GPUs' memory",
    )
    ar_fast_path: bool | None = Field(
        None,
        description="AR decoding with a static KV cache and a CUDA-graph step (the same tokens on the CPU); "
        "default: on for CUDA, off elsewhere",
    )
    batched_cfg: bool = Field(
        False, description="DiT conditional and unconditional passes as one batch (rounding differs)"
    )
    vae_tiling: bool = Field(
        False, description="tiled VAE decoding above the VAE's tile size (pixels change at seams)"
    )
    cache_dir: Path = Field(
        Path.home() / ".cache" / "glm-image-server",
        description="where the tiny model is built and preview projections are kept",
    )
    previews: int = Field(
        6,
        ge=0,
        le=20,
        description="live previews per image during the DiT stage (a cheap latent->RGB projection); 0: none",
    )
    progress_interval_s: float = Field(
        0.25, gt=0, description="a running job's progress is written to the store at most this often"
    )

    # The server.
    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8000, ge=0, le=65535, description="port to bind")
    data_dir: Path = Field(
        Path.home() / ".local" / "share" / "glm-image-server",
        description="the job database (jobs.sqlite3) and generated files (files/)",
    )
    database_url: str | None = Field(
        None,
        description="PostgreSQL job store shared by a fleet, e.g. postgresql://user@host/db; "
        "default: the SQLite file in the data directory",
    )
    database_pool_size: int = Field(8, ge=1, description="PostgreSQL connections per process")
    storage_url: str | None = Field(
        None,
        description="s3://bucket/prefix: outputs and uploads in S3 (AWS_ENDPOINT_URL, keys and region "
        "from the standard AWS variables), served as presigned URLs; default: files/ in the data directory",
    )
    public_url: str | None = Field(
        None,
        description="base URL clients reach the server at (behind a reverse proxy); "
        "default: the URL each request came in on",
    )
    api_keys: Annotated[CommaList, AfterValidator(no_empty_keys)] = Field(
        default_factory=list,
        description="accepted API keys, comma-separated in the environment; `name:key` names a key, and "
        "logs and metrics then say whose work a job was",
    )
    cors_origins: CommaList = Field(
        default_factory=list,
        description="web page origins (scheme://host[:port]) whose scripts may call the API from a browser, "
        "comma-separated in the environment; '*' for any; default: none (same origin only)",
    )
    allow_unauthenticated: bool = Field(False, description="serve a non-loopback address with no API keys")
    ssl_certfile: Path | None = Field(None, description="serve HTTPS with this certificate (PEM)")
    ssl_keyfile: Path | None = Field(None, description="the certificate's private key (PEM)")
    tls: Literal["self-signed"] | None = Field(
        None,
        description="self-signed: serve HTTPS with a certificate made on first start and kept in the data "
        "directory (tls/), for the bound host, localhost and 127.0.0.1; clients trust tls/ca.pem",
    )
    wait_poll_s: float = Field(
        1.0, gt=0, description="a waiting sync request re-reads its job at least this often"
    )
    shutdown_drain_s: float = Field(
        20.0,
        ge=0,
        description="on SIGTERM, how long waiting sync requests may go on for their jobs before they are "
        "answered 503 (no new jobs are taken meanwhile; queued jobs stay for the next start)",
    )
    change_poll_s: float = Field(
        0.05,
        gt=0,
        description="how often the API reads the store's change log, where the store cannot push changes",
    )
    stream_keepalive_s: float = Field(
        15.0, gt=0, description="a status stream sends a keep-alive comment after this much silence"
    )
    snapshot_ttl_s: float = Field(
        0.5, ge=0, description="how long a status read is served from memory without a change"
    )

    # Workers: the processes that run the model.
    workers: Annotated[str | None, BeforeValidator(checked_workers)] = Field(
        None,
        description="worker processes `serve` starts: N (N whole-model workers; 0: the API alone, workers "
        "join with `glm-image worker`) or roles with optional GPUs, e.g. prior@0,decode@1; default: planned "
        "from the visible GPUs' memory (`glm-image plan`), 1 without a GPU",
    )
    worker_id: str | None = Field(None, description="this worker's name (default: host-pid)")
    role: Literal["all", "prior", "decode"] = Field(
        "all", description="a worker's stages: all, prior (the AR model) or decode (DiT and VAE)"
    )
    torch_threads: int | None = Field(
        None, ge=1, description="torch CPU threads per worker (default: the CPU cores / workers)"
    )
    lease_s: float = Field(
        15.0, gt=0, description="a worker that has not renewed its claim this long loses its jobs"
    )
    heartbeat_s: float = Field(2.0, gt=0, description="how often a worker renews its claims")
    idle_poll_s: float = Field(
        0.5,
        gt=0,
        description="how often an idle worker looks for jobs (at least lease_s/4 where the store pushes)",
    )
    cancel_poll_s: float = Field(
        0.2, gt=0, description="how often a running job's cancel flag is read from the store"
    )
    worker_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="CPU priority a worker process lowers itself by, so the API answers first on a busy CPU",
    )
    worker_restart_max_s: float = Field(
        30.0, gt=0, description="longest wait before restarting a worker that keeps dying"
    )

    # Post-processing.
    safety_checker: str = Field(
        "nudenet", description="'nudenet', 'none', or a 'module:Class' with check(images) -> flags"
    )
    safety_threshold: float = Field(0.5, ge=0, le=1, description="detection score that flags")
    safety_labels: CommaList = Field(
        default_factory=lambda: list(DEFAULT_LABELS), description="detector labels that flag an image"
    )
    safety_default: bool = Field(True, description="check images where the API has no flag (OpenAI)")
    text_checker: str = Field(
        "rapidocr",
        description="reads back quoted text when asked: 'rapidocr', 'none', or a 'module:Class' with "
        "check(images, spans) -> text checks",
    )
    text_check_threads: int = Field(
        1, ge=0, le=256, description="CPU threads of the OCR per model; 0: every core"
    )
    expansion_base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint for prompt expansion, e.g. http://host:8000/v1"
    )
    expansion_model: str = Field("glm-4.7", description="the chat model that expands prompts")
    expansion_api_key: str | None = Field(None, description="its API key (Bearer)")
    expansion_timeout_s: float = Field(30.0, gt=0, description="give up expanding after this long")

    # Pricing, reported as cost (Runware includeCost) and recorded on every job.
    pricing: Literal["megapixel", "gpu_second"] = Field("megapixel", description="how cost is computed")
    price_per_megapixel: float = Field(0.05, ge=0, description="USD per output megapixel (fal's)")
    price_per_gpu_second: float = Field(0.0, ge=0, description="USD per second of AR+DiT+VAE")

    # Jobs.
    max_batch_size: int = Field(8, ge=1, description="images per engine batch")
    batch_window_s: float = Field(
        0.01, ge=0, description="how long a new job waits for compatible ones to batch with"
    )
    result_retention_s: float = Field(7 * 24 * 3600, gt=0, description="keep results this long")
    max_job_attempts: int = Field(
        3, ge=1, description="runs of a job interrupted by a restart before it is failed"
    )

    # Limits: what one client, or bad luck, can make the server take on (docs/operations.md).
    max_body_bytes: int = Field(
        32 * 1024 * 1024, gt=0, description="largest request body (413 above, before it is read)"
    )
    max_unauthenticated_body_bytes: int = Field(
        64 * 1024,
        gt=0,
        description="largest Runware REST body without a valid Bearer key (the key may be inside it)",
    )
    max_tasks_per_message: int = Field(
        32, ge=1, description="Runware tasks in one REST body or WebSocket message"
    )
    max_queued_jobs: int = Field(1000, ge=1, description="queued jobs in all; 429 beyond")
    max_jobs_per_key: int = Field(100, ge=1, description="queued and running jobs of one API key; 429 beyond")
    submit_rate_per_client: float = Field(
        10.0,
        gt=0,
        description="submissions per second per API key (per address without keys), bursts of twice that",
    )
    auth_failures_per_minute: float = Field(
        30.0, gt=0, description="wrong or missing keys per client address per minute; 429 beyond"
    )
    min_free_disk_mb: float = Field(
        256.0, ge=0, description="below this much free space in the data directory, new work gets 507"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="a connection must send a request's headers within this"
    )
    body_timeout_s: float = Field(60.0, gt=0, description="and its body within this")
    max_connections_per_client: int = Field(256, ge=1, description="open connections from one client address")
    ws_ping_interval_s: float = Field(20.0, gt=0, description="WebSocket ping interval")
    ws_ping_timeout_s: float = Field(
        20.0, gt=0, description="a WebSocket ping unanswered this long closes it"
    )

    # URLs the server fetches (image inputs) or calls (webhooks).
    fetch_timeout_s: float = Field(20.0, gt=0, description="whole-fetch deadline of an input URL")
    fetch_max_bytes: int = Field(30 * 1024 * 1024, gt=0, description="largest input image, bytes")
    fetch_max_redirects: int = Field(5, ge=0, description="redirects followed per input URL")
    input_max_pixels: int = Field(
        40_000_000, gt=0, description="largest input image, pixels (decompression-bomb guard)"
    )
    allow_loopback_urls: bool = Field(False, description="let URLs point at 127.0.0.0/8 and ::1")
    allow_private_urls: bool = Field(
        False, description="let URLs point at private, link-local and other non-global addresses"
    )
    webhook_timeout_s: float = Field(15.0, gt=0, description="deadline of one webhook or upload call")
    webhook_max_attempts: int = Field(10, ge=1, description="attempts per webhook or upload, then none")
    webhook_retry_base_s: float = Field(
        5.0, gt=0, description="first retry delay; doubles per attempt up to webhook_retry_max_s"
    )
    webhook_retry_max_s: float = Field(1800.0, gt=0, description="longest delay between attempts")
    delivery_concurrency: int = Field(
        16, ge=1, description="webhook and upload calls in flight at once (one per destination)"
    )
    delivery_lease_s: float = Field(
        120.0, gt=0, description="one API process holds a webhook attempt this long"
    )
    webhook_key_file: Path | None = Field(
        None,
        description="the Ed25519 private key (PEM) fal webhooks are signed with, published at "
        "/.well-known/jwks.json; default webhook-key.pem in the data directory, made on first start. "
        "Give every API replica of a fleet the same file",
    )

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def webhook_key_path(self) -> Path:
        return self.webhook_key_file or self.data_dir / "webhook-key.pem"

    @property
    def tls_dir(self) -> Path:
        """Where `tls: self-signed` keeps its CA and server certificate."""
        return self.data_dir / "tls"
