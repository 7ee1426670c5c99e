"""A worker plan in words: the table `glm-image plan` prints (workers, each GPU's expected use and whether
it fits, the figures behind each kind of worker and their sources) and the lines `serve` logs at start."""

from __future__ import annotations

from .gpus import Gpu
from .memory import GIB, reference_bytes
from .plan import FIT_FRACTION, SIZES, Plan, PlanEntry

PEAK_RULE = (
    "peak: the weights on the GPU + the largest stage's activations (offload model: the largest "
    "component with its own activations); a GPU fits when its workers' peaks add up to at most "
    f"{FIT_FRACTION:.0%} of its memory"
)
CPU_NOTE = (
    "no GPU: the workers run on the CPU; the figures below are a GPU's, in bf16, for reference "
    "(on the CPU the default dtype is float32: twice the weights)"
)


def _gib(value: float) -> str:
    return f"{value:.1f}"


def _where(entry: PlanEntry) -> str:
    return f"GPU {entry.gpu.index}" if entry.gpu else "CPU"


def gpu_line(plan: Plan, gpu: Gpu) -> str:
    at = {s: f"{_gib(plan.gpu_gib(gpu, s))} GiB at {s}²" for s in SIZES}
    if gpu.total_gib is None:
        return f"GPU {gpu.index} (device {gpu.device}): memory unknown; expected " + ", ".join(at.values())
    verdicts = [f"{text} ({'fits' if plan.fits(gpu, s) else 'does NOT fit'})" for s, text in at.items()]
    return f"GPU {gpu.index}: {_gib(gpu.total_gib)} GiB, expected " + ", ".join(verdicts)


def worker_lines(plan: Plan) -> list[str]:
    """One line per worker, as `serve` logs them; with the expected GiB where its GPU's memory was planned."""
    lines = []
    for e in plan.entries:
        line = f"worker {e.worker_id}: role {e.role}, {_where(e)}, quantize {e.quantize}, offload {e.offload}"
        if e.gpu is not None and e.gpu.total_gib is not None:
            line += ", expected " + ", ".join(f"{_gib(e.peak_gib(s))} GiB at {s}²" for s in SIZES)
        lines.append(line)
    return lines


def _figures(entry: PlanEntry, sources: dict[str, int]) -> list[str]:
    """The figures behind one kind of worker: its weights, and its activations at each size."""
    lines = [f"{entry.role}, quantize {entry.quantize}, offload {entry.offload}:"]
    shown = set()
    for estimate in entry.estimates:
        for figure in estimate.figures:
            if (figure.label, figure.gib) in shown:
                continue
            shown.add((figure.label, figure.gib))
            key = sources.setdefault(figure.source, len(sources) + 1)
            lines.append(f"  {figure.gib:6.2f} GiB  {figure.label} [{key}]")
        lines.append(f"  {estimate.peak_gib:6.2f} GiB  peak at {estimate.size}²")
    return lines


def render(plan: Plan) -> str:
    if not plan.entries:
        return "no workers: the API alone (workers join with `glm-image worker`)\n"
    head = ("worker", "role", "where", "quantize", "offload", *(f"GiB at {s}²" for s in SIZES))
    rows = [
        (e.worker_id, e.role, _where(e), e.quantize, e.offload, *(_gib(e.peak_gib(s)) for s in SIZES))
        for e in plan.entries
    ]
    table = [head, *rows]
    widths = [max(map(len, column)) for column in zip(*table, strict=True)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
    if plan.gpus:
        lines += [gpu_line(plan, gpu) for gpu in plan.gpus]
        lines.append(f"fits: {'yes' if plan.fits_every_gpu else 'NO'} at {SIZES[0]}²; {plan.reason}")
    else:
        lines += [CPU_NOTE, plan.reason]
    lines.append("")
    sources: dict[str, int] = {}
    kinds = {(e.role, e.quantize, e.offload, e.gpu is not None): e for e in plan.entries}
    for entry in kinds.values():
        lines += _figures(entry, sources)
    dit, ar = reference_bytes(1024, 1024)
    reference = (
        f"image-to-image (not above): a 1024² reference adds {dit / GIB:.2f} GiB to the DiT stage (its keys "
        f"and values in every block) and {ar / GIB:.2f} GiB per AR row"
    )
    lines += ["", PEAK_RULE, reference, *(f"[{key}] {source}" for source, key in sources.items())]
    return "\n".join(lines) + "\n"
