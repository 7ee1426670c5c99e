"""GPU quick run: the figures the stage split, the memory planner and the fast paths need, in one short lease.

    OUT=/tmp/gq .venv/bin/python bench/gpu_quick.py --tiny          # rehearsal: tiny model, fp32, CPU
    python3 bench/gpu_quick.py --full-size --out $OUT                # the H200 run (docs/benchmarks.md)

Sections, in priority order, each skipped when the time left (`--budget-s`, counted from the process start)
is short of its estimate; `$OUT/gpu_quick.json` and `$OUT/gpu_quick.md` are rewritten after every row, so a
killed run still returns what it finished:
  0 environment: GPU, driver, library versions, time to build the model, device-to-device copy bandwidth
  1 memory: weight GiB per component; peak GiB of the AR stage alone (1024² t2i) and of glyph+DiT+VAE alone
    (1024², prior tokens given): the weights of the stage plus what the stage allocates on top
  3 AR at 512², batch 1: eager `generate()` against the fast path (ar_fast.py), tokens/s, token-exactness,
    and the ratio to the bandwidth floor (AR weight bytes / copy bandwidth per token). Run before 2: its
    timings decide 2's size
  2 t2i at 1024² (512² when the estimate does not fit), 50 steps: stock `GlmImagePipeline.__call__` against
    our Engine at its defaults (bench/gpu.py's side by side)
  4 AR fast path at 512², batch 1, 4, 8, 16
  5 DiT s/step at 1024² over 5 steps, the pipeline's two passes and batched CFG; VAE decode at 1024² and
    2048², tiled and not
  6 torchao weight-only int8 and fp8 (and fp8 dynamic) on a copy of the AR language model and of the DiT:
    weight GiB, speed (AR eager tokens/s at 512², DiT s/step at 1024²), relative error against bf16
  7 offloading: diffusers group offloading of a DiT copy (block level, then leaf level) and
    enable_model_cpu_offload of the whole pipeline under the Engine

On the CPU (--tiny) the sizes shrink (1024² -> 128², 512² -> 64², 2048² -> 256²) and what needs CUDA (fp8,
offload streams, CUDA graphs, model offload) is skipped with the reason, or run without it and said so.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import itertools
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gpu
import torch

from glm_image_server.core.request import GenerationRequest
from glm_image_server.engine.dit import denoise, vae_tiling
from glm_image_server.engine.engine import Engine
from glm_image_server.engine.loader import quiet_library_logs
from glm_image_server.engine.prior import PriorTokens, chat_inputs, generate_new_tokens, generate_prior_tokens

PROMPT = gpu.PROMPT
ORDER = ("0", "1", "3", "2", "4", "5", "6", "7")  # 3 before 2: its timings size section 2
TITLES = {
    "0": "environment",
    "1": "weights and stage peaks",
    "2": "t2i, stock vs engine",
    "3": "AR 512² batch 1: eager vs fast path",
    "4": "AR fast path, batch sizes",
    "5": "DiT and VAE",
    "6": "torchao quantization",
    "7": "offloading",
}
FULL = SimpleNamespace(small=512, large=1024, huge=2048, steps=50, scale=1.0, reserve_s=60.0)
TINY = SimpleNamespace(small=64, large=128, huge=256, steps=50, scale=0.05, reserve_s=0.0)
# Seconds an item is expected to take on the H200 (the reasoning: docs/benchmarks.md), x scale on the CPU.
ESTIMATE = {"1": 25, "3": 30, "4": 20, "5": 30, "6_ar": 20, "6_dit": 15, "7_group": 35, "7_model": 50}
TWO_PASS, BATCHED = "two passes", "batched CFG"


def process_age_s() -> float:
    """Seconds since this process started (imports included), from /proc; 0 where /proc is missing."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class Report:
    """Rows per section, rewritten to `out/gpu_quick.{json,md}` after every row and section."""

    def __init__(self, out: Path, budget_s: float, scale: float, meta: dict[str, Any]) -> None:
        self.out, self.budget_s, self.scale = out, budget_s, scale
        self.started = time.monotonic() - process_age_s()
        self.data: dict[str, Any] = {"meta": meta, "sections": {}}
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def fits(self, seconds: float) -> bool:
        return self.left() >= seconds

    def section(self, key: str) -> dict[str, Any]:
        return self.data["sections"].setdefault(
            key, {"title": TITLES[key], "status": "running", "rows": [], "notes": []}
        )

    def row(self, key: str, case: str, variant: str, **values: Any) -> None:
        self.section(key)["rows"].append({"case": case, "variant": variant, **values})
        self.write()

    def note(self, key: str, text: str) -> None:
        print(f"  [{key}] {text}", flush=True)
        self.section(key)["notes"].append(text)
        self.write()

    def skip(self, key: str, case: str, variant: str, reason: str) -> None:
        self.row(key, case, variant, skipped=reason)

    def guard(self, key: str, case: str, variant: str, seconds: float) -> bool:
        """True when the item fits the time left; else it is recorded as skipped for the budget."""
        if self.fits(seconds):
            return True
        self.skip(key, case, variant, f"budget: {self.left():.0f} s left, needs ~{seconds:.0f} s")
        return False

    @contextlib.contextmanager
    def run(self, key: str, estimate_s: float) -> Iterator[bool]:
        """One section: skipped when it does not fit (`estimate_s`: H200 seconds, scaled), its exception
        recorded (and the run goes on)."""
        section, start = self.section(key), time.monotonic()
        estimate_s *= self.scale
        print(f"== {key}. {TITLES[key]} (elapsed {self.budget_s - self.left():.0f} s)", flush=True)
        if estimate_s and not self.fits(estimate_s):
            section["status"] = f"skipped: budget ({self.left():.0f} s left, needs ~{estimate_s:.0f})"
            self.write()
            yield False
            return
        try:
            yield True
            section["status"] = "done"
        except Skip as why:
            section["status"] = f"skipped: {why}"
        except Exception as exc:
            section["status"] = f"error: {type(exc).__name__}: {exc}"[:500]
            section["traceback"] = traceback.format_exc()[-3000:]
            print(section["traceback"], flush=True)
            free_memory()
        finally:
            section["seconds"] = round(time.monotonic() - start, 1)
            self.write()

    def write(self) -> None:
        self.data["meta"]["elapsed_s"] = round(self.budget_s - self.left(), 1)
        (self.out / "gpu_quick.json").write_text(json.dumps(self.data, indent=1, default=str))
        (self.out / "gpu_quick.md").write_text(self.markdown())

    def markdown(self) -> str:
        meta = self.data["meta"]
        lines = [f"# GPU quick run: {meta.get('model')} on {meta.get('gpu', meta.get('device'))}", ""]
        for key, section in self.data["sections"].items():
            seconds = section.get("seconds", "-")
            lines += [f"## {key}. {section['title']} ({section['status']}, {seconds} s)", ""]
            rows = section["rows"]
            for case in dict.fromkeys(r["case"] for r in rows):
                lines += [*table(case, [r for r in rows if r["case"] == case]), ""]
            lines += [f"- {n}" for n in section["notes"]] + [""]
        return "\n".join(lines)


def table(case: str, rows: list[dict[str, Any]]) -> list[str]:
    """One case's rows: the case heads the first column, which holds each row's variant."""
    columns = [c for c in dict.fromkeys(k for r in rows for k in r) if c not in ("case", "variant")]
    head = "| " + " | ".join([fmt(case), *columns]) + " |"
    body = ["| " + " | ".join(fmt(r.get(c)) for c in ("variant", *columns)) + " |" for r in rows]
    return [head, "|" + "---|" * (len(columns) + 1), *body]


class Skip(Exception):
    """A section that cannot run here, and why."""


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/")


# --- measuring


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def probe(device: torch.device) -> Iterator[dict[str, float | None]]:
    """Seconds of the block (synchronised), and on CUDA the peak allocated GiB, the GiB the block
    allocated on top of what was resident (`extra_gib`) and the caching allocator's peak reserved GiB during
    the block, in all (about what nvidia-smi shows, less the CUDA context)."""
    out: dict[str, float | None] = {"s": None, "peak_gib": None, "extra_gib": None, "reserved_gib": None}
    cuda = device.type == "cuda"
    if cuda:
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    yield out
    sync(device)
    out["s"] = time.perf_counter() - start
    if cuda:
        peak = torch.cuda.max_memory_allocated(device)
        out["peak_gib"], out["extra_gib"] = peak / 2**30, (peak - before) / 2**30
        out["reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30


def tensor_bytes(t: torch.Tensor) -> int:
    """Storage bytes, through tensor subclasses (torchao's quantized weights) to their inner tensors."""
    if hasattr(t, "__tensor_flatten__") and type(t) is not torch.nn.Parameter:
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    if type(t) is torch.nn.Parameter and hasattr(t.data, "__tensor_flatten__"):
        return tensor_bytes(t.data)
    return t.numel() * t.element_size()


def gib(*modules: torch.nn.Module) -> float:
    return sum(tensor_bytes(t) for m in modules for t in (*m.parameters(), *m.buffers())) / 2**30


def components(pipe) -> dict[str, list[torch.nn.Module]]:
    vle = pipe.vision_language_encoder
    return {
        "AR language model": [vle.model.language_model, vle.lm_head],
        "AR vision tower": [vle.model.visual, vle.model.vqmodel],
        "DiT": [pipe.transformer],
        "glyph encoder": [pipe.text_encoder],
        "VAE": [pipe.vae],
    }


def decode_weight_bytes(pipe) -> int:
    """Bytes one AR decode step must read: the language model's weights less its embedding table (one row
    of it is read), plus the head."""
    lm = pipe.vision_language_encoder.model.language_model
    embed = lm.get_input_embeddings().weight
    return int(gib(*components(pipe)["AR language model"]) * 2**30) - tensor_bytes(embed)


def copy_bandwidth(device: torch.device, mib: int) -> float:
    """Bytes read plus written per second by a large device-to-device copy (median of 10)."""
    src = torch.empty(mib * 2**20, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(10):
        with probe(device) as p:
            dst.copy_(src)
        times.append(p["s"])
    del src, dst
    return 2 * mib * 2**20 / sorted(times)[len(times) // 2]


# --- the stages


def run_ar(pipe, side: int, rows: int, fast: bool) -> tuple[PriorTokens, int, dict]:
    """The AR stage (prior.py) for `rows` copies of the prompt, seeds 0..rows-1: tokens, new tokens per row,
    and the probe."""
    total = [0]
    generators = [torch.Generator(pipe._execution_device).manual_seed(s) for s in range(rows)]
    with torch.inference_mode(), probe(pipe._execution_device) as p:
        prior = generate_prior_tokens(
            pipe,
            [PROMPT] * rows,
            side,
            side,
            None,
            generators,
            lambda d, n: total.__setitem__(0, n),
            fast=fast,
        )
    return prior, total[0], p


def eager_rate(pipe, side: int, tokens: int) -> float:
    """Eager `generate()` tokens/s over the first `tokens` tokens of a `side`² t2i prompt, batch 1."""
    vle, device = pipe.vision_language_encoder, pipe._execution_device
    with torch.inference_mode():
        inputs = chat_inputs(pipe, [PROMPT], side, side, None)
        generator = [torch.Generator(device).manual_seed(0)]
        with probe(device) as p:
            generate_new_tokens(vle, inputs, generator, tokens, None, None)
    return tokens / p["s"]


def random_prior(pipe, side: int, seed: int = 0) -> PriorTokens:
    transformer = pipe.transformer
    grid = side // (pipe.vae_scale_factor * transformer.config.patch_size)
    codes = transformer.config.prior_vq_quantizer_codebook_size
    ids = torch.randint(0, codes, (1, grid * grid), generator=torch.Generator().manual_seed(seed))
    return PriorTokens(ids.to(pipe._execution_device), None, None)


def dit_inputs(pipe, side: int, seed: int = 0) -> tuple[dict, dict]:
    """Fixed inputs of one guided step at `side`²: the conditional and the unconditional forward's kwargs."""
    transformer, device = pipe.transformer, pipe._execution_device
    dtype = transformer.dtype
    with torch.inference_mode():
        cond, uncond = pipe.encode_prompt(PROMPT, True, device=device, dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    side_latent = side // pipe.vae_scale_factor
    latents = torch.randn((1, transformer.config.in_channels, side_latent, side_latent), generator=generator)
    prior = random_prior(pipe, side, seed).token_ids
    common = {
        "hidden_states": latents.to(device, dtype),
        "prior_token_id": prior,
        "timestep": torch.full((1,), 500.0, device=device),
        "target_size": torch.tensor([[side, side]], dtype=dtype, device=device),
        "crop_coords": torch.zeros((1, 2), dtype=dtype, device=device),
        "return_dict": False,
    }
    drop = torch.zeros_like(prior, dtype=torch.bool)
    return (
        {**common, "encoder_hidden_states": cond, "prior_token_drop": drop},
        {**common, "encoder_hidden_states": uncond, "prior_token_drop": ~drop},
    )


def dit_step(transformer, inputs: tuple[dict, dict], device: torch.device, steps: int = 3) -> dict:
    """Median s/step of the pipeline's two passes (conditional, unconditional) after one warm-up step."""
    times, peak = [], None
    with torch.inference_mode():
        for i in range(steps + 1):
            with probe(device) as p:
                for kwargs in inputs:
                    transformer(**kwargs)
            if i:
                times.append(p["s"])
                peak = max(peak or 0.0, p["extra_gib"] or 0.0) if device.type == "cuda" else None
    return {"s_per_step": sorted(times)[len(times) // 2], "extra_gib": peak}


def velocity(transformer, inputs: tuple[dict, dict]) -> torch.Tensor:
    with torch.inference_mode():
        return transformer(**inputs[0])[0].float()


def ar_logits(pipe, side: int) -> torch.Tensor:
    """The AR model's logits for one prefill forward of the `side`² t2i prompt."""
    with torch.inference_mode():
        inputs = chat_inputs(pipe, [PROMPT], side, side, None)
        return pipe.vision_language_encoder(**inputs, use_cache=False).logits.float()


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).norm() / ref.norm())


def step_clock(device: torch.device) -> tuple[list[float], Callable]:
    """A callback_on_step_end that records the (synchronised) time at each step's end."""
    stamps: list[float] = []

    def step_end(_pipe, _i, _t, tensors: dict) -> dict:
        sync(device)
        stamps.append(time.perf_counter())
        return tensors

    return stamps, step_end


def per_step(stamps: list[float]) -> float:
    gaps = sorted(b - a for a, b in itertools.pairwise(stamps))
    return gaps[len(gaps) // 2] if gaps else float("nan")


# --- the sections


class Ctx:
    """What the sections share: the report, the pipeline, the sizes and figures earlier sections measured."""

    def __init__(self, report: Report, args: argparse.Namespace, sizes: SimpleNamespace) -> None:
        self.report, self.args, self.sizes = report, args, sizes
        self.pipe: Any = None
        self.device = torch.device("cpu")
        self.tokens: dict[int, int] = {}  # side -> AR new tokens per image
        self.rates: dict[str, float] = {}  # eager / fast tokens/s, DiT s/step at the large size
        self.prior: PriorTokens | None = None  # the large size's AR output (section 1)
        self.cuda = False

    def static(self, seconds: float) -> float:
        """An H200 estimate in this run's seconds (the tiny CPU run is quicker)."""
        return seconds * self.sizes.scale

    def guard(self, key: str, case: str, variant: str, estimate: str | float) -> bool:
        """`estimate`: an ESTIMATE key (scaled), or seconds (from rates measured in this run)."""
        seconds = self.static(ESTIMATE[estimate]) if isinstance(estimate, str) else estimate
        return self.report.guard(key, case, variant, seconds)


def versions() -> dict[str, str]:
    found = {}
    for name in (
        "torch",
        "diffusers",
        "transformers",
        "torchao",
        "accelerate",
        "huggingface_hub",
        "tokenizers",
    ):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def nvidia_smi() -> str:
    try:
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        return subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable ({type(exc).__name__})"


def section_env(ctx: Ctx) -> None:
    r, meta = ctx.report, ctx.report.data["meta"]
    meta.update(versions=versions(), python=platform.python_version(), nvidia_smi=nvidia_smi())
    if torch.cuda.is_available():
        meta["gpu"] = torch.cuda.get_device_name(0)
        meta["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    r.row("0", "versions", "-", **meta["versions"], python=meta["python"])
    r.row("0", "device", "-", gpu=meta.get("gpu", "none (CPU)"), nvidia_smi=meta["nvidia_smi"])
    start = time.perf_counter()
    ctx.pipe = gpu.load(ctx.args)
    ctx.device = ctx.pipe._execution_device
    ctx.cuda = ctx.device.type == "cuda"
    meta["device"] = str(ctx.device)
    sync(ctx.device)
    dtype = str(ctx.pipe.transformer.dtype).removeprefix("torch.")
    resident = torch.cuda.memory_allocated(ctx.device) / 2**30 if ctx.cuda else None
    r.row(
        "0",
        "build the model",
        meta["model"],
        s=time.perf_counter() - start,
        dtype=dtype,
        resident_gib=resident,
    )
    bandwidth = copy_bandwidth(ctx.device, 4096 if ctx.cuda else 64)
    ctx.rates["copy_bytes_per_s"] = bandwidth
    r.row("0", "device-to-device copy", "read+written", GB_per_s=bandwidth / 1e9)


def section_memory(ctx: Ctx) -> None:
    r, pipe, side = ctx.report, ctx.pipe, ctx.sizes.large
    parts = {name: gib(*mods) for name, mods in components(pipe).items()}
    for name, size in parts.items():
        r.row("1", "weights", name, GiB=size)
    if not ctx.cuda:
        meta = full_size_weights()
        for name, size in meta.items():
            r.row("1", "weights (full size, meta device)", name, GiB=size)
    engine = Engine(pipe)
    with probe(ctx.device) as p:  # warm-up: CUDA context, kernels, handles, the graph capture path
        warm = GenerationRequest(
            prompt=PROMPT, width=ctx.sizes.small, height=ctx.sizes.small, num_inference_steps=1
        )
        engine.generate([warm])
    r.note("1", f"warm-up (engine, {ctx.sizes.small}², 1 step): {p['s']:.1f} s")
    prior_gib = parts["AR language model"] + parts["AR vision tower"]
    fast = bool(getattr(engine, "ar_fast_path", ctx.cuda))  # the engine's default
    ctx.prior, tokens, p = run_ar(pipe, side, 1, fast)
    ctx.tokens[side] = tokens
    ctx.rates["fast_large"] = tokens / p["s"]
    r.row(
        "1",
        f"prior stage alone, t2i {side}²",
        "fast path" if fast else "eager",
        stage_weights_gib=prior_gib,
        extra_gib=p["extra_gib"],
        alone_peak_gib=alone(prior_gib, p),
        peak_reserved_gib=p["reserved_gib"],
        s=p["s"],
        tokens=tokens,
        tok_s=tokens / p["s"],
    )
    decode_gib = parts["DiT"] + parts["glyph encoder"] + parts["VAE"]
    steps = 3
    stamps, step_end = step_clock(ctx.device)
    with torch.inference_mode(), probe(ctx.device) as p:
        pipe(
            prompt=PROMPT,
            height=side,
            width=side,
            num_inference_steps=steps,
            prior_token_ids=ctx.prior.token_ids,
            generator=torch.Generator().manual_seed(0),
            output_type="pil",
            callback_on_step_end=step_end,
        )
    ctx.rates["dit_step_large"] = per_step(stamps)
    r.row(
        "1",
        f"decode stage alone, t2i {side}², {steps} steps",
        "glyph+DiT+VAE",
        stage_weights_gib=decode_gib,
        extra_gib=p["extra_gib"],
        alone_peak_gib=alone(decode_gib, p),
        peak_reserved_gib=p["reserved_gib"],
        s=p["s"],
        dit_s_per_step=ctx.rates["dit_step_large"],
    )
    r.note("1", "alone_peak_gib = the stage's weights + what it allocated on top (peak - resident before)")


def alone(weights_gib: float, p: dict) -> float | None:
    return weights_gib + p["extra_gib"] if p["extra_gib"] is not None else None


def full_size_weights() -> dict[str, float]:
    """The released shapes' component sizes in bf16, built on the meta device (CPU rehearsal)."""
    from full_size import build_meta_modules

    modules = build_meta_modules()
    vle = modules["vision_language_encoder"]
    return {
        "AR language model": gib(vle.model.language_model, vle.lm_head),
        "AR vision tower": gib(vle.model.visual, vle.model.vqmodel),
        "DiT": gib(modules["transformer"]),
        "glyph encoder": gib(modules["text_encoder"]),
        "VAE": gib(modules["vae"]),
    }


def section_ar(ctx: Ctx) -> None:
    r, pipe, side = ctx.report, ctx.pipe, ctx.sizes.small
    eager, tokens, pe = run_ar(pipe, side, 1, fast=False)
    ctx.tokens[side] = tokens
    ctx.rates["eager_small"] = tokens / pe["s"]
    runs = [run_ar(pipe, side, 1, fast=True) for _ in range(2)]  # the second: warm
    fast, _, pf = runs[-1]
    ctx.rates["fast_small"] = tokens / pf["s"]
    floor = decode_weight_bytes(pipe) / ctx.rates["copy_bytes_per_s"]
    graphs = "CUDA graph" if ctx.cuda else "no CUDA graph on the CPU"
    for variant, p in (
        ("eager generate()", pe),
        (f"fast path, {graphs}, 1st", runs[0][2]),
        (f"fast path, {graphs}", pf),
    ):
        r.row(
            "3",
            f"AR {side}² batch 1",
            variant,
            tokens=tokens,
            s=p["s"],
            tok_s=tokens / p["s"],
            ms_per_token=1e3 * p["s"] / tokens,
            x_floor=p["s"] / tokens / floor,
            extra_gib=p["extra_gib"],
        )
    same = grid_tokens(eager) == grid_tokens(fast)
    mismatch = (~same).nonzero()
    r.row(
        "3",
        f"AR {side}² batch 1",
        "fast vs eager tokens",
        identical=bool(same.all()),
        equal_fraction=float(same.float().mean()),
        first_diff=int(mismatch[0, 1]) if len(mismatch) else None,
    )
    r.note(
        "3",
        f"bandwidth floor: {decode_weight_bytes(pipe) / 2**30:.2f} GiB of AR weights per token / copy "
        f"bandwidth = {1e3 * floor:.2f} ms per token; x_floor = measured / floor",
    )


def grid_tokens(prior: PriorTokens) -> torch.Tensor:
    """The AR's own d32 grid of each row (the prior tokens are its nearest-neighbour 2x upsampling)."""
    rows, n = prior.token_ids.shape
    side = int(n**0.5)
    return prior.token_ids.view(rows, side, side)[:, ::2, ::2].reshape(rows, -1).cpu()


def t2i_estimate(ctx: Ctx, side: int) -> float | None:
    """Seconds of section 2 at `side`² from the rates measured so far (stock eager AR + engine fast AR +
    twice the DiT steps and a VAE decode, + 10 s); None when a rate is missing."""
    large = ctx.sizes.large
    tokens = ctx.tokens.get(side)
    eager, dit = ctx.rates.get("eager_small"), ctx.rates.get("dit_step_large")
    fast = ctx.rates.get("fast_large" if side == large else "fast_small")
    if None in (tokens, eager, dit, fast):
        return None
    dit_side = dit * (side / large) ** 2
    return tokens / eager + tokens / fast + 2 * ctx.sizes.steps * dit_side + 10 * ctx.sizes.scale


def section_t2i(ctx: Ctx) -> None:
    r, sizes = ctx.report, ctx.sizes
    forced = ctx.args.t2i_size
    side = forced or sizes.large
    estimate = t2i_estimate(ctx, side)
    if not forced and (estimate is None or not r.fits(estimate + sizes.reserve_s)):
        r.note(
            "2",
            f"{side}² estimated {fmt(estimate)} s, {r.left():.0f} s left: too slow, at {sizes.small}²",
        )
        side = sizes.small
        estimate = t2i_estimate(ctx, side)
    r.note("2", f"t2i at {side}², {sizes.steps} steps; estimated {fmt(estimate)} s")
    bench = gpu.Bench(ctx.pipe, sizes.steps)
    case = f"t2i {side}² {sizes.steps} steps"
    ours = bench.engine("2", case, Engine(ctx.pipe), [bench.request(side, 1)], "engine")
    run_row(r, "2", case, ours)
    if not ctx.guard("2", case, "stock", estimate - ours.total_s if estimate else ctx.static(60)):
        return
    with no_early_eos(ctx.pipe):
        stock = bench.stock("2", case, [bench.request(side, 1)], ours.ar_tokens)
    run_row(r, "2", case, stock)
    speed = stock.total_s / ours.total_s
    r.note(
        "2", f"engine/stock speed {speed:.2f}x; stock's DiT column is the rest of its call (glyph, denoising)"
    )
    r.note("2", "the release's figure: 64.3 s and 37.8 GB at 1024² on an H100")
    r.note(
        "2",
        "stock ran with generation_config.eos_token_id unset: random weights may sample EOS before the "
        "grid is full, which crashes the stock pipeline; the token count is the real model's either way",
    )


def run_row(r: Report, key: str, case: str, run: gpu.Run) -> None:
    r.row(
        key,
        case,
        run.runner,
        total_s=run.total_s,
        ar_s=run.ar_s,
        ar_tokens=run.ar_tokens,
        ar_tok_s=run.ar_tok_s,
        dit_s_per_step=run.dit_s_per_step,
        vae_s=run.vae_s,
        peak_gib=run.peak_gib,
    )


@contextlib.contextmanager
def no_early_eos(pipe) -> Iterator[None]:
    """The stock `generate()` without an EOS to stop at, for the duration (see section 2's note)."""
    config = pipe.vision_language_encoder.generation_config
    eos = config.eos_token_id
    config.eos_token_id = None
    try:
        yield
    finally:
        config.eos_token_id = eos


def section_batches(ctx: Ctx) -> None:
    r, side = ctx.report, ctx.sizes.small
    for rows in (1, 4, 8, 16):
        per_row = 1 / ctx.rates.get("fast_small", 100.0) * ctx.tokens.get(side, 400)
        if not ctx.guard("4", f"AR {side}² fast", f"batch {rows}", ctx.static(2) + per_row * (1 + rows / 8)):
            break
        _, tokens, p = run_ar(ctx.pipe, side, rows, fast=True)
        r.row(
            "4",
            f"AR {side}² fast",
            f"batch {rows}",
            s=p["s"],
            s_per_request=p["s"] / rows,
            tok_s=rows * tokens / p["s"],
            extra_gib=p["extra_gib"],
        )


def attempt(r: Report, key: str, case: str, variant: str, measure: Callable[[], dict[str, Any]]) -> bool:
    """One item of a section: its row, or its error as the row (the section goes on); True when measured."""
    try:
        values = measure()
    except Exception as exc:
        print(traceback.format_exc()[-2000:], flush=True)
        r.row(key, case, variant, error=f"{type(exc).__name__}: {exc}"[:300])
        return False
    finally:
        free_memory()
    r.row(key, case, variant, **values)
    return True


def section_dit_vae(ctx: Ctx) -> None:
    r, side, steps = ctx.report, ctx.sizes.large, 5
    case = f"DiT {side}², {steps} steps"
    for variant in (TWO_PASS, BATCHED):
        if ctx.guard("5", case, variant, 6 * ctx.rates.get("dit_step_large", ctx.static(1.0))):
            attempt(r, "5", case, variant, lambda v=variant: dit_steps(ctx, side, steps, v == BATCHED))
    vae = ctx.pipe.vae
    with torch.inference_mode():
        vae.decode(vae_latents(ctx.pipe, side), return_dict=False)  # warm-up
    tile = getattr(vae, "tile_sample_min_size", None)
    for size in (side, ctx.sizes.huge):
        for tiled in (False, True):
            variant = "tiled" if tiled else "untiled"
            if ctx.guard("5", f"VAE decode {size}²", variant, ctx.static(3 * (size / side) ** 2)):
                attempt(r, "5", f"VAE decode {size}²", variant, lambda z=size, t=tiled: vae_decode(ctx, z, t))
    r.note("5", f"VAE tiles are {tile} px: tiling does nothing at or below that side")


def dit_steps(ctx: Ctx, side: int, steps: int, batched: bool) -> dict[str, Any]:
    """The pipeline's DiT loop (or dit.py's batched CFG one) from random prior tokens, timed per step."""
    pipe, prior = ctx.pipe, random_prior(ctx.pipe, side)
    stamps, step_end = step_clock(ctx.device)
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode(), probe(ctx.device) as p:
        if batched:
            denoise(pipe, PROMPT, (), side, side, steps, 1.5, prior, generator, step_end)
        else:
            pipe(
                prompt=PROMPT, height=side, width=side, num_inference_steps=steps, guidance_scale=1.5,
                prior_token_ids=prior.token_ids, generator=generator, output_type="latent",
                callback_on_step_end=step_end,
            )  # fmt: skip
    return {"s_per_step": per_step(stamps), "s": p["s"], "extra_gib": p["extra_gib"]}


def vae_decode(ctx: Ctx, side: int, tiled: bool) -> dict[str, Any]:
    vae, latents = ctx.pipe.vae, vae_latents(ctx.pipe, side)
    with torch.inference_mode(), vae_tiling(vae, tiled), probe(ctx.device) as p:
        vae.decode(latents, return_dict=False)
    tile = getattr(vae, "tile_sample_min_size", None)
    active = (tile is not None and side > tile) if tiled else None
    return {"s": p["s"], "extra_gib": p["extra_gib"], "tiling_active": active}


def vae_latents(pipe, side: int) -> torch.Tensor:
    vae, z = pipe.vae, side // pipe.vae_scale_factor
    noise = torch.randn((1, vae.config.latent_channels, z, z), generator=torch.Generator().manual_seed(0))
    return noise.to(pipe._execution_device, vae.dtype)


def quant_configs(ctx: Ctx) -> dict[str, Callable[[], Any] | str]:
    """torchao configs by name, or why a variant cannot run here."""
    try:
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            Float8WeightOnlyConfig,
            Int8WeightOnlyConfig,
            PerRow,
        )
    except ImportError as exc:
        raise Skip(f"torchao is not importable ({exc})") from exc

    fp8 = ctx.cuda and torch.cuda.get_device_capability(ctx.device) >= (8, 9)
    why = "fp8 needs CUDA with compute capability >= 8.9"
    dynamic = lambda: Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())  # noqa: E731
    return {
        "int8 weight-only": lambda: Int8WeightOnlyConfig(version=2),
        "fp8 weight-only": Float8WeightOnlyConfig if fp8 else why,
        "fp8 dynamic per-row": dynamic if fp8 else why,
    }


QUANT_ORDER = (  # the AR's and the DiT's first two variants before the third of either
    ("AR", "int8 weight-only"), ("AR", "fp8 weight-only"), ("DiT", "int8 weight-only"),
    ("DiT", "fp8 dynamic per-row"), ("AR", "fp8 dynamic per-row"), ("DiT", "fp8 weight-only"),
)  # fmt: skip


def quantized_copy(
    module: torch.nn.Module, config: Any, device: torch.device
) -> tuple[torch.nn.Module, dict]:
    from torchao.quantization import quantize_

    with torch.no_grad(), probe(device) as p:
        q = copy.deepcopy(module)
        quantize_(q, config)
    return q, p


class Quant:
    """Section 6's fixed inputs and bf16 references; each variant measured on a quantized copy."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx, pipe = ctx, ctx.pipe
        self.owner = pipe.vision_language_encoder.model
        self.lm, self.small = self.owner.language_model, ctx.sizes.small
        self.tokens = min(ctx.tokens.get(self.small, 128), 128)
        self.inputs = dit_inputs(pipe, ctx.sizes.large)
        self.ref: dict[str, torch.Tensor] = {}

    def ar(self, config: Any = None) -> dict[str, Any]:
        """AR prefill logits' error and eager tokens/s with the language model `config`-quantized."""
        pipe, p = self.ctx.pipe, {}
        q = self.lm
        if config is not None:
            q, p = quantized_copy(self.lm, config, self.ctx.device)
        self.owner.language_model = q
        try:
            logits = ar_logits(pipe, self.small)
            self.ref.setdefault("AR", logits)
            rate = eager_rate(pipe, self.small, self.tokens)
            return {
                "weight_gib": gib(q),
                "tok_s": rate,
                "rel_err": rel_err(logits, self.ref["AR"]),
                "quantize_s": p.get("s"),
            }
        finally:
            self.owner.language_model = self.lm

    def dit(self, config: Any = None) -> dict[str, Any]:
        """DiT velocity's error and s/step with the transformer `config`-quantized."""
        q, p = self.ctx.pipe.transformer, {}
        if config is not None:
            q, p = quantized_copy(q, config, self.ctx.device)
        out = velocity(q, self.inputs)
        self.ref.setdefault("DiT", out)
        step = dit_step(q, self.inputs, self.ctx.device)
        if config is None:
            self.ctx.rates["dit_bf16"] = step["s_per_step"]
        return {
            "weight_gib": gib(q),
            "s_per_step": step["s_per_step"],
            "rel_err": rel_err(out, self.ref["DiT"]),
            "quantize_s": p.get("s"),
        }


def section_quant(ctx: Ctx) -> None:
    r, configs, quant = ctx.report, quant_configs(ctx), Quant(ctx)
    cases = {
        "AR": (f"AR language model (eager {quant.small}², {quant.tokens} tokens)", quant.ar, 8),
        "DiT": (f"DiT ({ctx.sizes.large}²)", quant.dit, 5),
    }
    base = str(ctx.pipe.transformer.dtype).removeprefix("torch.")  # bf16 on the GPU, fp32 on the CPU
    for case, measure, estimate in cases.values():
        if ctx.guard("6", case, base, ctx.static(estimate)):
            attempt(r, "6", case, base, measure)
    for part, name in QUANT_ORDER:
        (case, measure, _), config = cases[part], configs[name]
        if isinstance(config, str):
            r.skip("6", case, name, config)
        elif part in quant.ref and ctx.guard("6", case, name, "6_ar" if part == "AR" else "6_dit"):
            attempt(r, "6", case, name, lambda m=measure, c=config: m(c()))
    r.note(
        "6",
        "each variant quantizes a copy (copy.deepcopy + quantize_) and drops it; the AR copy replaces "
        "model.language_model for its runs (lm_head and the embedding table stay bf16); rel_err = "
        "|out - ref| / |ref| of the AR prefill logits, of the DiT's conditional velocity; random weights",
    )


def section_offload(ctx: Ctx) -> None:
    r, side = ctx.report, ctx.sizes.large
    inputs, case = dit_inputs(ctx.pipe, side), f"DiT {side}²"
    if "dit_bf16" not in ctx.rates:
        step = dit_step(ctx.pipe.transformer, inputs, ctx.device)
        ctx.rates["dit_bf16"] = step["s_per_step"]
        r.row("7", case, "no offload", **step)
    dit_gib = gib(ctx.pipe.transformer)
    r.note("7", f"no offload: {ctx.rates['dit_bf16']:.3f} s/step, {dit_gib:.1f} GiB of DiT weights resident")
    for level in ("block_level", "leaf_level"):
        variant = f"group offload {level}" + ("" if ctx.cuda else " (CPU rehearsal: no stream)")
        if ctx.guard("7", case, variant, "7_group"):
            attempt(r, "7", case, variant, lambda lv=level: group_offload(ctx, lv, inputs))
    r.note(
        "7",
        "extra_gib of a group-offloaded copy is all it holds on the GPU (its weights live in pinned CPU "
        "memory); the pipeline's own DiT stays resident beside it",
    )
    case = f"t2i {side}² 5 steps"
    if not ctx.cuda:
        r.skip("7", case, "enable_model_cpu_offload", "needs a GPU")
    elif ctx.guard("7", case, "enable_model_cpu_offload", "7_model"):
        attempt(r, "7", case, "enable_model_cpu_offload + engine", lambda: model_offload(ctx, side))


def group_offload(ctx: Ctx, level: str, inputs: tuple[dict, dict]) -> dict[str, Any]:
    """A copy of the DiT with diffusers' group offloading (CUDA streams on a GPU): s/step against none."""
    offloaded = copy.deepcopy(ctx.pipe.transformer)
    kwargs = {"num_blocks_per_group": 1} if level == "block_level" else {}
    with probe(ctx.device) as setup:
        offloaded.enable_group_offload(
            onload_device=ctx.device, offload_device=torch.device("cpu"), offload_type=level,
            use_stream=ctx.cuda, **kwargs,
        )  # fmt: skip
    step = dit_step(offloaded, inputs, ctx.device)
    ratio = step["s_per_step"] / ctx.rates["dit_bf16"]
    return {**step, "x_no_offload": ratio, "setup_s": setup["s"]}


def model_offload(ctx: Ctx, side: int) -> dict[str, Any]:
    """enable_model_cpu_offload of the whole pipeline (last: it moves everything), a t2i under the Engine."""
    ctx.pipe.enable_model_cpu_offload(device=ctx.device)
    free_memory()
    bench = gpu.Bench(ctx.pipe, 5)
    run = bench.engine("7", f"t2i {side}²", Engine(ctx.pipe), [bench.request(side, 1)], "engine")
    keys = ("total_s", "ar_s", "ar_tokens", "ar_tok_s", "dit_s_per_step", "vae_s", "peak_gib")
    return {key: getattr(run, key) for key in keys}


SECTIONS: dict[str, tuple[Callable[[Ctx], None], float]] = {
    "0": (section_env, 0),
    "1": (section_memory, ESTIMATE["1"]),
    "3": (section_ar, ESTIMATE["3"]),
    "2": (section_t2i, 30),
    "4": (section_batches, 10),
    "5": (section_dit_vae, 15),
    "6": (section_quant, 20),
    "7": (section_offload, ESTIMATE["7_group"]),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--full-size", action="store_true", help="random weights, released shapes (GPU only)")
    source.add_argument("--model", help="a diffusers-format directory or hub id")
    source.add_argument("--tiny", action="store_true", help="the tiny model, small sizes (CPU rehearsal)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_quick_out"), help="default: $OUT")
    parser.add_argument("--budget-s", type=float, default=330.0, help="from the process start")
    parser.add_argument("--sections", default=",".join(sorted(SECTIONS)), help="0 always runs (it builds)")
    parser.add_argument("--t2i-size", type=int, help="section 2's side (default: 1024, or 512 if short)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    quiet_library_logs()
    sizes = TINY if args.tiny else FULL
    source = "tiny" if args.tiny else "full-size random" if args.full_size else args.model
    meta = {"model": source, "argv": sys.argv[1:], "budget_s": args.budget_s, "started_at_s": process_age_s()}
    report = Report(Path(args.out), args.budget_s, sizes.scale, meta)
    ctx = Ctx(report, args, sizes)
    wanted = {"0", *args.sections.split(",")}
    for key in (k for k in ORDER if k in wanted):
        run, estimate = SECTIONS[key]
        if key != "0" and ctx.pipe is None:
            report.section(key)["status"] = "skipped: no model"
            continue
        with report.run(key, estimate) as go:
            if go:
                run(ctx)
    report.write()
    print("\n" + report.markdown(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
