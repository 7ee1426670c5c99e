"""GPU benchmark: the stock `GlmImagePipeline.__call__` and our Engine side by side, in one run on one device.

    .venv/bin/python bench/gpu.py --full-size [--json out.json]      # random weights, released shapes (GPU)
    .venv/bin/python bench/gpu.py --model DIR [--cpu-offload]         # real weights from a directory or id
    .venv/bin/python bench/gpu.py --tiny                              # tiny model, small sizes, CPU-friendly

Sections (`--sections`, default all):
  sizes        t2i at each of --sizes and i2i (one reference) at --i2i-size, batch 1, stock vs engine:
               total, AR tokens/s, DiT s/step, VAE s and peak GPU memory (torch.cuda.max_memory_allocated)
  concurrency  --concurrency requests at --batch-size: one engine call vs as many sequential stock calls
  fast         each engine switch against the plain engine, one change at a time, as ratios: ar_fast_path
               (AR stage), batched_cfg (DiT stage) at --batch-size, vae_tiling (VAE time, peak) at the
               largest size
  offload      enable_model_cpu_offload: t2i and i2i at --batch-size, stock vs engine (GPU only)

Stock stage times come from timing its `generate_prior_tokens` and `vae.decode`; its "DiT" is the rest of
the call (glyph encoding, reference cache, denoising). The stock image-to-image path is broken by
transformers 5.23, so stock i2i runs with the same two-method shim as tests/test_engine.py. --tiny numbers
measure code paths, not speed. With --repeats N each measurement runs N times and the median is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from glm_image_server.config import Settings
from glm_image_server.core.request import GenerationRequest
from glm_image_server.engine.engine import Engine
from glm_image_server.engine.loader import load_pipeline, quiet_library_logs
from glm_image_server.slices import EngineSettings

PROMPT = "a shop sign that reads 'OPEN' above a wooden door, warm evening light, photo"
SECTIONS = ("sizes", "concurrency", "fast", "offload")
FULL = {"steps": 50, "sizes": "512,1024,2048", "i2i_size": 1024, "batch_size": 1024}
TINY = {"steps": 2, "sizes": "64,128,256", "i2i_size": 128, "batch_size": 128}


@dataclass
class Run:
    section: str
    case: str
    runner: str
    images: int
    total_s: float
    ar_s: float
    ar_tokens: int
    dit_s: float
    steps: int
    vae_s: float
    peak_gib: float | None

    @property
    def ar_tok_s(self) -> float:
        return self.images * self.ar_tokens / self.ar_s if self.ar_s else 0.0

    @property
    def dit_s_per_step(self) -> float:
        return self.dit_s / (self.steps * self.images) if self.steps else 0.0


class Bench:
    def __init__(self, pipe, steps: int, repeats: int = 1) -> None:
        self.pipe, self.steps, self.repeats = pipe, steps, repeats
        self.device: torch.device = pipe._execution_device
        self.runs: list[Run] = []

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def peak(self) -> Iterator[list[float | None]]:
        out: list[float | None] = [None]
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        yield out
        if self.device.type == "cuda":
            out[0] = torch.cuda.max_memory_allocated(self.device) / 2**30

    def request(self, side: int, seed: int, refs: tuple[Image.Image, ...] = ()) -> GenerationRequest:
        """A request whose references are already decoded (kept in IMAGES; the locators are stand-ins)."""
        locators = tuple(f"data:,reference-{i}" for i in range(len(refs)))
        request = GenerationRequest(
            prompt=PROMPT,
            width=side,
            height=side,
            num_inference_steps=self.steps,
            seed=seed,
            references=locators,
        )
        IMAGES[id(request)] = refs
        return request

    def engine(self, section: str, case: str, engine: Engine, requests: list, name: str) -> Run:
        return self._median(
            [self._engine_once(section, case, engine, requests, name) for _ in range(self.repeats)]
        )

    def _engine_once(self, section: str, case: str, engine: Engine, requests: list, name: str) -> Run:
        tokens = [0]

        def progress(event) -> None:
            if event.stage == "ar":
                tokens[0] = event.total

        with self.peak() as peak:
            start = time.perf_counter()
            results = engine.generate(requests, [images(r) for r in requests], on_progress=progress)
            self.sync()
            total = time.perf_counter() - start
        t = results[0].timings
        return Run(
            section, case, name, len(requests), total, t.ar, tokens[0], t.dit, self.steps, t.vae, peak[0]
        )

    def stock(self, section: str, case: str, requests: list[GenerationRequest], tokens: int) -> Run:
        return self._median([self._stock_once(section, case, requests, tokens) for _ in range(self.repeats)])

    def _stock_once(self, section: str, case: str, requests: list[GenerationRequest], tokens: int) -> Run:
        """The requests one after another through `pipe(...)`; stage times summed."""
        clock = {"ar": 0.0, "vae": 0.0}
        with self.peak() as peak, _stage_clock(self.pipe, clock, self.sync):
            start = time.perf_counter()
            for request in requests:
                _stock_call(self.pipe, request)
            self.sync()
            total = time.perf_counter() - start
        dit = total - clock["ar"] - clock["vae"]
        n = len(requests)
        return Run(
            section, case, "stock", n, total, clock["ar"], tokens, dit, self.steps, clock["vae"], peak[0]
        )

    def _median(self, runs: list[Run]) -> Run:
        """The run with the median total time is the one recorded."""
        run = sorted(runs, key=lambda r: r.total_s)[len(runs) // 2]
        self.runs.append(run)
        return run


@contextlib.contextmanager
def _stage_clock(pipe, clock: dict[str, float], sync: Callable[[], None]) -> Iterator[None]:
    """Time the stock pipeline's AR call and VAE decode (instance attributes over the methods)."""

    def timed(key: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            sync()
            clock[key] += time.perf_counter() - start
            return out

        return wrapper

    pipe.generate_prior_tokens = timed("ar", pipe.generate_prior_tokens)
    pipe.vae.decode = timed("vae", pipe.vae.decode)
    try:
        yield
    finally:
        del pipe.generate_prior_tokens
        del pipe.vae.decode


@contextlib.contextmanager
def _i2i_shim(vle) -> Iterator[None]:
    """Let the stock image-to-image path run on transformers 5.23 (as tests/test_engine.py's shim): pack
    the per-image feature list for the pipeline's `torch.cat`, unpack it in `get_image_tokens`."""
    base = type(vle)
    features, tokens = base.get_image_features, base.get_image_tokens

    class Shimmed(base):
        def get_image_features(self, *args, **kwargs):
            out = features(self, *args, **kwargs)
            if len(args) == 2 and not kwargs:  # the pipeline's positional call site
                out.pooler_output = [torch.cat([e.flatten(1).T for e in out.pooler_output])]
            return out

        def get_image_tokens(self, hidden_states, image_grid_thw=None):
            if isinstance(hidden_states, torch.Tensor) and hidden_states.dim() == 2:
                chunks = torch.split(hidden_states, image_grid_thw.prod(-1).tolist())
                hidden_states = [
                    c.T.reshape(-1, int(g[1]), int(g[2]))
                    for c, g in zip(chunks, image_grid_thw, strict=False)
                ]
            return tokens(self, hidden_states, image_grid_thw)

    vle.__class__ = Shimmed
    try:
        yield
    finally:
        vle.__class__ = base


def _stock_call(pipe, request: GenerationRequest) -> None:
    shim = _i2i_shim(pipe.vision_language_encoder) if request.references else contextlib.nullcontext()
    with shim:
        pipe(
            prompt=request.prompt,
            image=list(images(request)) or None,
            height=request.height,
            width=request.width,
            num_inference_steps=request.num_inference_steps,
            guidance_scale=request.guidance_scale,
            generator=torch.Generator().manual_seed(request.seed),
        )


IMAGES: dict[int, tuple[Image.Image, ...]] = {}  # id(request) -> its decoded references


def images(request: GenerationRequest) -> tuple[Image.Image, ...]:
    return IMAGES.get(id(request), ())


def reference(side: int) -> Image.Image:
    """A noise reference already on the 32-px grid (the engine's fitting leaves it as it is)."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))


def side_by_side(bench: Bench, section: str, case: str, engine: Engine, requests: list) -> tuple[Run, Run]:
    ours = bench.engine(section, case, engine, requests, "engine")
    return bench.stock(section, case, requests, ours.ar_tokens), ours


def run_sizes(bench: Bench, args) -> list[str]:
    engine, lines = Engine(bench.pipe), []
    cases = [(f"t2i {s}²", bench.request(s, 1)) for s in args.sizes]
    cases.append((f"i2i {args.i2i_size}²", bench.request(args.i2i_size, 1, (reference(args.i2i_size),))))
    for case, request in cases:
        stock, ours = side_by_side(bench, "sizes", case, engine, [request])
        lines.append(f"{case}: engine/stock speed {stock.total_s / ours.total_s:.2f}x")
    return lines


def run_concurrency(bench: Bench, args) -> list[str]:
    requests = [bench.request(args.batch_size, seed) for seed in range(args.concurrency)]
    stock, ours = side_by_side(
        bench, "concurrency", f"{args.concurrency} x {args.batch_size}²", Engine(bench.pipe), requests
    )
    ratio = stock.total_s / ours.total_s
    return [f"{args.concurrency} requests: engine batched vs stock sequential throughput {ratio:.2f}x"]


def run_fast(bench: Bench, args) -> list[str]:
    pipe, case = bench.pipe, f"t2i {args.batch_size}²"
    plain = dict(ar_fast_path=False, batched_cfg=False, vae_tiling=False)
    base = bench.engine("fast", case, Engine(pipe, **plain), [bench.request(args.batch_size, 1)], "plain")
    ar = bench.engine(
        "fast",
        case,
        Engine(pipe, **{**plain, "ar_fast_path": True}),
        [bench.request(args.batch_size, 1)],
        "ar_fast_path",
    )
    cfg = bench.engine(
        "fast",
        case,
        Engine(pipe, **{**plain, "batched_cfg": True}),
        [bench.request(args.batch_size, 1)],
        "batched_cfg",
    )
    big = max(args.sizes)
    untiled = bench.engine("fast", f"t2i {big}²", Engine(pipe, **plain), [bench.request(big, 1)], "plain")
    tiled = bench.engine(
        "fast",
        f"t2i {big}²",
        Engine(pipe, **{**plain, "vae_tiling": True}),
        [bench.request(big, 1)],
        "vae_tiling",
    )
    lines = [
        f"ar_fast_path: AR stage {base.ar_s / ar.ar_s:.2f}x, total {base.total_s / ar.total_s:.2f}x",
        f"batched_cfg: DiT stage {base.dit_s / cfg.dit_s:.2f}x, total {base.total_s / cfg.total_s:.2f}x",
        f"vae_tiling at {big}²: VAE {untiled.vae_s / tiled.vae_s:.2f}x",
    ]
    if untiled.peak_gib and tiled.peak_gib:
        lines[-1] += f", peak memory {tiled.peak_gib / untiled.peak_gib:.2f}x"
    return lines


def run_offload(bench: Bench, args) -> list[str]:
    if bench.device.type != "cuda":
        return ["offload: skipped (enable_model_cpu_offload needs a GPU)"]
    bench.pipe.enable_model_cpu_offload(device=bench.device)
    engine, side, lines = Engine(bench.pipe), args.batch_size, []
    for case, request in (
        (f"t2i {side}²", bench.request(side, 1)),
        (f"i2i {side}²", bench.request(side, 1, (reference(side),))),
    ):
        stock, ours = side_by_side(bench, "offload", case, engine, [request])
        lines.append(f"offload {case}: engine/stock speed {stock.total_s / ours.total_s:.2f}x")
    return lines


def load(args):
    if args.full_size:
        from full_size import Shapes, build_full_size_pipeline

        if not torch.cuda.is_available():
            raise SystemExit("--full-size needs a GPU (16B parameters in bf16)")
        # The DiT's prior-token table takes all 16,512 AR vision tokens: random AR weights sample any of
        # them, where the release emits only its 16,384 codes (out of range: a device-side assert).
        shapes = Shapes()
        dit = {**shapes.dit, "prior_vq_quantizer_codebook_size": shapes.ar.text_config.vision_vocab_size}
        return build_full_size_pipeline("cuda", shapes=Shapes(dit=dit))
    settings = Settings(model="tiny" if args.tiny else args.model, device=args.device)
    return load_pipeline(EngineSettings.from_settings(settings))


def table(runs: list[Run]) -> str:
    rows = [
        f"{'section':<12}{'case':<16}{'runner':<14}{'imgs':>5}{'total s':>9}{'AR tok/s':>10}"
        f"{'DiT s/step':>11}{'VAE s':>8}{'peak GiB':>9}"
    ]
    for r in runs:
        peak = f"{r.peak_gib:.1f}" if r.peak_gib is not None else "-"
        rows.append(
            f"{r.section:<12}{r.case:<16}{r.runner:<14}{r.images:>5}{r.total_s:>9.2f}{r.ar_tok_s:>10.1f}"
            f"{r.dit_s_per_step:>11.3f}{r.vae_s:>8.2f}{peak:>9}"
        )
    return "\n".join(rows)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--full-size", action="store_true", help="random weights, released shapes (GPU only)")
    source.add_argument("--model", help="a diffusers-format directory or hub id")
    source.add_argument("--tiny", action="store_true", help="the tiny model, small sizes, few steps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--sizes", help="comma-separated t2i sides")
    parser.add_argument("--i2i-size", type=int)
    parser.add_argument("--batch-size", type=int, help="side of the concurrency/fast/offload images")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="keep the median-time run of this many")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--cpu-offload", action="store_true", help="also run the offload section")
    parser.add_argument("--json", help="write the runs and ratios here")
    args = parser.parse_args(argv)
    defaults = TINY if args.tiny else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.sizes = [int(s) for s in str(args.sizes).split(",")]
    args.sections = [s for s in args.sections.split(",") if s and (s != "offload" or args.cpu_offload)]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    quiet_library_logs()
    pipe = load(args)
    bench = Bench(pipe, args.steps, args.repeats)
    engine = Engine(pipe)
    source = "tiny" if args.tiny else "full-size random" if args.full_size else args.model
    print(f"model={source} device={bench.device} steps={args.steps} threads={torch.get_num_threads()}")
    switches = ("ar_fast_path", "batched_cfg", "vae_tiling")
    print("engine defaults: " + " ".join(f"{name}={getattr(engine, name)}" for name in switches))
    side = min(args.sizes)
    warm = GenerationRequest(prompt=PROMPT, width=side, height=side, num_inference_steps=1, seed=0)
    engine.generate([warm])  # warm-up: CUDA context, kernels, caches
    _stock_call(pipe, warm)
    ratios: list[str] = []
    runners = {"sizes": run_sizes, "concurrency": run_concurrency, "fast": run_fast, "offload": run_offload}
    for section in (s for s in SECTIONS if s in args.sections):  # offload last: it moves the pipeline
        ratios += runners[section](bench, args)
    print(table(bench.runs))
    print("\nratios (speed; >1: the engine, or the switch, is faster)")
    print("\n".join(f"  {line}" for line in ratios))
    if args.json:
        runs = [{**asdict(r), "ar_tok_s": r.ar_tok_s, "dit_s_per_step": r.dit_s_per_step} for r in bench.runs]
        with open(args.json, "w") as f:
            json.dump(
                {
                    "model": source,
                    "device": str(bench.device),
                    "steps": args.steps,
                    "runs": runs,
                    "ratios": ratios,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
