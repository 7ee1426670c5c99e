"""Worker plans: the worker processes `serve` starts (each one's role, GPU, quantization and offload), from
`--workers PLAN` or from the visible GPUs and their memory (worker/memory.py); `glm-image plan` prints it.

PLAN is `N` (N `all` workers spread over the GPUs; 0: the API alone) or a comma list of roles, each with an
optional GPU (its place among the visible ones): `prior@0,decode@1`, `prior,decode,decode`. By default a GPU
with room for the whole model gets an `all` worker; smaller GPUs are paired into `prior` + `decode` (the
larger runs the AR model); a small GPU left over adds a `decode` worker, or is an `all` worker alone.
Quantization and offload are one choice for the whole plan (a stage's bytes must not depend on which worker
ran it): the first of bf16, int8, int8 + whole-model offload, int8 + streamed blocks under which every GPU
fits; `--quantize` and `--offload` fix theirs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, get_args

from ..core.job import Role
from .gpus import Gpu, visible_gpus
from .memory import Estimate, estimate

if TYPE_CHECKING:
    from ..config import Settings

ROLES: tuple[str, ...] = get_args(Role)
SIZES = (1024, 2048)  # the output sizes (square) a plan states its memory at; it must fit the first
FIT_FRACTION = 0.95  # of a GPU's memory a plan may expect to use: the rest is left to fragmentation
LADDER = (("none", "none"), ("int8", "none"), ("int8", "model"), ("int8", "group"))


class WorkerSpec(NamedTuple):
    """One worker of a PLAN: its role and, if pinned, its GPU's place among the visible ones."""

    role: Role
    gpu: int | None = None


def parse_workers(text: str) -> int | tuple[WorkerSpec, ...]:
    """`'2'` -> 2; `'prior@0,decode@1'` -> the specs. A ValueError says, in one line, what is wrong."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        if int(text) < 0:
            raise ValueError(f"a worker count must be greater than or equal to 0, not {text}")
        return int(text)
    specs = []
    for item in text.split(","):
        role, at, gpu = item.strip().partition("@")
        if role not in ROLES:
            raise ValueError(
                f"{item.strip()!r} in {text!r}: expected a worker count, or roles (all, prior, decode) "
                "separated by commas, each with an optional @GPU, e.g. prior@0,decode@1"
            )
        if at and not gpu.isdigit():
            raise ValueError(f"{item.strip()!r}: a GPU is its number among the visible GPUs, e.g. {role}@0")
        specs.append(WorkerSpec(role, int(gpu) if at else None))  # type: ignore[arg-type]
    return tuple(specs)


def checked_workers(value: object) -> object:
    """The `workers` setting, checked when Settings are made: a count (an int from code becomes its text)
    or a plan; a bad one fails there, as one line."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        if not value.strip():
            return None  # an empty variable: the default plan
        parse_workers(value)
        return ",".join(item.strip() for item in value.split(","))
    return value


def api_only(workers: str | None) -> bool:
    """Whether `serve` with this `workers` setting starts no worker processes."""
    return workers is not None and parse_workers(workers) == 0


class PlanEntry(NamedTuple):
    """One worker process: id (w0, w1, ...), role, GPU (None: the CPU), what it loads, its estimates."""

    worker_id: str
    role: Role
    gpu: Gpu | None
    quantize: str
    offload: str
    estimates: tuple[Estimate, ...]  # at each of SIZES

    def peak_gib(self, size: int) -> float:
        return next(e.peak_gib for e in self.estimates if e.size == size)


@dataclass(frozen=True)
class Plan:
    entries: tuple[PlanEntry, ...]
    gpus: tuple[Gpu, ...]
    reason: str  # why its quantization and offload

    def gpu_gib(self, gpu: Gpu, size: int) -> float:
        return sum(e.peak_gib(size) for e in self.entries if e.gpu == gpu)

    def fits(self, gpu: Gpu, size: int = SIZES[0]) -> bool:
        """Whether the workers on `gpu` are expected to fit it (a GPU of unknown size is taken to)."""
        return gpu.total_gib is None or self.gpu_gib(gpu, size) <= FIT_FRACTION * gpu.total_gib

    @property
    def fits_every_gpu(self) -> bool:
        return all(self.fits(gpu) for gpu in self.gpus)


def _round_robin(specs: Iterable[WorkerSpec], gpus: list[Gpu]) -> list[tuple[Role, Gpu | None]]:
    """Pinned workers on their GPU; the others over the visible GPUs in turn (none: the CPU)."""
    placed, turn = [], 0
    for spec in specs:
        if spec.gpu is not None:
            if spec.gpu >= len(gpus):
                seen = {0: "no GPU is", 1: "only GPU 0 is"}.get(len(gpus), f"GPUs 0-{len(gpus) - 1} are")
                raise ValueError(f"{spec.role}@{spec.gpu}: GPU {spec.gpu} is not visible ({seen} visible)")
            placed.append((spec.role, gpus[spec.gpu]))
        else:
            placed.append((spec.role, gpus[turn % len(gpus)] if gpus else None))
            turn += 1
    return placed


def default_layout(gpus: list[Gpu], rows: int = 8) -> list[tuple[Role, Gpu | None]]:
    """Roles per GPU from their memory: `all` where the whole model fits in bf16, pairs of the others."""
    if not gpus:
        return [("all", None)]
    whole = estimate("all", "none", "none", SIZES[0], rows).peak_gib
    big = [g for g in gpus if g.total_gib is None or whole <= FIT_FRACTION * g.total_gib]
    small = sorted((g for g in gpus if g not in big), key=lambda g: -(g.total_gib or 0.0))
    layout: list[tuple[Role, Gpu | None]] = [("all", g) for g in big]
    for larger, smaller in zip(small[::2], small[1::2], strict=False):
        layout += [("prior", larger), ("decode", smaller)]
    if len(small) % 2:
        layout.append(("decode" if layout else "all", small[-1]))
    return sorted(layout, key=lambda placed: placed[1].index if placed[1] else -1)


def _options(settings: Settings) -> list[tuple[str, str]]:
    """The (quantize, offload) pairs to try in turn; a setting given by flag or environment is kept."""
    given = settings.model_fields_set
    quantize = settings.quantize if "quantize" in given else None
    offload = settings.offload if "offload" in given else ("model" if settings.cpu_offload else None)
    options: list[tuple[str, str]] = []
    for q, o in LADDER:
        option = (quantize or q, offload or o)
        if option not in options:
            options.append(option)
    return options


def _entry(i: int, role: Role, gpu: Gpu | None, option: tuple[str, str], rows: int) -> PlanEntry:
    estimates = tuple(estimate(role, *option, size, rows, gpu is not None) for size in SIZES)
    return PlanEntry(f"w{i}", role, gpu, *option, estimates)


def make_plan(settings: Settings, gpus: list[Gpu]) -> Plan:
    """The plan for `settings` on `gpus`: its `workers` layout (or the default one), with the first
    quantization and offload under which every GPU fits (the last one tried where none does)."""
    rows = settings.max_batch_size
    if settings.workers is None:
        layout = default_layout(gpus, rows)
    else:
        workers = parse_workers(settings.workers)
        layout = _round_robin([WorkerSpec("all")] * workers if isinstance(workers, int) else workers, gpus)
    options = _options(settings)
    plan = Plan((), tuple(gpus), "")
    for option in options if gpus else options[:1]:
        entries = tuple(_entry(i, role, gpu, option, rows) for i, (role, gpu) in enumerate(layout))
        plan = Plan(entries, tuple(gpus), _reason(option, options, settings))
        if plan.fits_every_gpu:
            break
    return plan


def _reason(option: tuple[str, str], options: list[tuple[str, str]], settings: Settings) -> str:
    given = [name for name in ("quantize", "offload") if name in settings.model_fields_set]
    said = f" ({' and '.join(f'--{n} given' for n in given)})" if given else ""
    why = "the first choice" if option == options[0] else "the first choice with which every GPU fits"
    return f"quantize {option[0]}, offload {option[1]}: {why}{said}"


def plan_for(settings: Settings, gpus: list[Gpu] | None = None, real_model: bool = False) -> Plan:
    """The plan `serve` uses: on the visible GPUs (read with nvidia-smi), none where the device is the CPU.
    The figures are the real model's; for the tiny model (unless `real_model`: `glm-image plan`) memory
    is not planned: one `all` worker per GPU, nothing quantized or offloaded unless asked for."""
    gpus = [] if settings.device in ("cpu", "mps") else visible_gpus() if gpus is None else gpus
    if settings.model == "tiny" and not real_model:
        gpus = [Gpu(gpu.index, gpu.device, None) for gpu in gpus]
    return make_plan(settings, gpus)
