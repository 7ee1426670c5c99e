"""The frozen slices of the Settings (config.py) each component receives, so it reads only the fields it is
given; cut by the composition roots (the CLI, a worker's entry points, the services; two more in serving/)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from .config import Settings


class Slice:
    """Subclasses: frozen dataclasses of the fields a component reads, as in Settings (lists as tuples)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        values = {f.name: getattr(settings, f.name) for f in fields(cls)}
        return cls(**{name: tuple(v) if isinstance(v, list) else v for name, v in values.items()})


@dataclass(frozen=True)
class EngineSettings(Slice):
    """Loading and running the model (engine/loader.py)."""

    model: str
    device: str
    dtype: str
    cpu_offload: bool
    quantize: str
    offload: str
    role: str
    ar_fast_path: bool | None
    batched_cfg: bool
    vae_tiling: bool
    cache_dir: Path
    previews: int
    torch_threads: int | None


@dataclass(frozen=True)
class WorkerSettings(Slice):
    """A worker's leases, polls, batching and threads, and its supervisor's (worker/)."""

    worker_id: str | None
    role: str
    workers: str | None
    device: str
    torch_threads: int | None
    worker_restart_max_s: float
    lease_s: float
    heartbeat_s: float
    idle_poll_s: float
    cancel_poll_s: float
    progress_interval_s: float
    max_batch_size: int
    batch_window_s: float
    data_dir: Path
    min_free_disk_mb: float


@dataclass(frozen=True)
class FetchSettings(Slice):
    """Input URLs: which addresses, how big, how long (media/fetch.py)."""

    allow_loopback_urls: bool
    allow_private_urls: bool
    fetch_timeout_s: float
    fetch_max_bytes: int
    fetch_max_redirects: int
    input_max_pixels: int
    tls: str | None
    tls_dir: Path


@dataclass(frozen=True)
class PostSettings(Slice):
    """The post stage's checkers (post/)."""

    safety_checker: str
    safety_threshold: float
    safety_labels: tuple[str, ...]
    text_checker: str
    text_check_threads: int


@dataclass(frozen=True)
class PricingSettings(Slice):
    """What a job costs (post/stage.py)."""

    pricing: str
    price_per_megapixel: float
    price_per_gpu_second: float


@dataclass(frozen=True)
class DeliverySettings(Slice):
    """Webhook and upload calls: deadline, retries, concurrency, leases (delivery/sender.py)."""

    webhook_timeout_s: float
    webhook_max_attempts: int
    webhook_retry_base_s: float
    webhook_retry_max_s: float
    delivery_concurrency: int
    delivery_lease_s: float
