"""The `glm-image` command."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from . import __version__
from .settings import Settings
from .types import (
    SIZE_PRESETS,
    GenerationRequest,
    InvalidRequest,
    Progress,
    image_seed,
    parse_size,
    size_like,
)

log = logging.getLogger("glm_image_server")

TINY_NOTICE = (
    "using the tiny random-weight demo model: it runs anywhere in seconds and its images are noise. "
    "For real images pass --model zai-org/GLM-Image (or a local directory) on a GPU."
)
STAGE_LABELS = {"ar": "AR tokens", "dit": "DiT steps", "vae": "VAE decode"}


def _model_flags(parser: argparse.ArgumentParser) -> None:
    defaults = Settings()
    parser.add_argument(
        "--model",
        default=defaults.model,
        help="'tiny' (demo model with random weights, built offline), a Hugging Face id such as "
        "zai-org/GLM-Image, or a local diffusers-format directory (env GLM_IMAGE_MODEL; default %(default)s)",
    )
    parser.add_argument("--device", default=defaults.device, choices=["auto", "cuda", "cpu", "mps"])
    parser.add_argument(
        "--dtype",
        default=defaults.dtype,
        choices=["auto", "bfloat16", "float16", "float32"],
        help="auto: bfloat16 on a GPU, float32 on the CPU",
    )
    parser.add_argument(
        "--cpu-offload",
        action=argparse.BooleanOptionalAction,
        default=defaults.cpu_offload,
        help="keep components in CPU memory and move each to the GPU while it runs (smaller GPUs)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glm-image", description="Self-hosted GLM-Image inference.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser(
        "generate",
        help="generate images from a prompt (and up to 4 reference images) into files",
        description="Text-to-image, or an edit of up to 4 reference images, written to image files.",
    )
    gen.add_argument(
        "prompt", help="what to draw; put text to render in quotes, e.g. a sign that reads 'OPEN'"
    )
    gen.add_argument(
        "-i",
        "--image",
        action="append",
        default=[],
        metavar="REF",
        help="reference image for an edit (repeat up to 4 times)",
    )
    gen.add_argument(
        "--size",
        default=None,
        help=f"WIDTHxHEIGHT (multiples of 32, 64..2048), 'auto', or one of {', '.join(SIZE_PRESETS)}. "
        "Default: square_hd (1024x1024); with reference images, auto: the first reference's aspect ratio "
        "at about one megapixel",
    )
    gen.add_argument("--steps", type=int, default=50, help="DiT denoising steps (default %(default)s)")
    gen.add_argument(
        "--guidance", type=float, default=1.5, help="classifier-free guidance (default %(default)s)"
    )
    gen.add_argument(
        "--seed", type=int, default=None, help="random seed; image i uses seed+i (default: random)"
    )
    gen.add_argument(
        "-n", "--num-images", type=int, default=1, help="images to generate (default %(default)s)"
    )
    gen.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("out.png"),
        help="output file: .png, .jpg or .webp; with -n > 1, NAME-1.png, NAME-2.png, ... "
        "(default %(default)s)",
    )
    _model_flags(gen)

    serve = commands.add_parser(
        "serve",
        help="run the HTTP server (fal.ai, Runware and OpenAI Images APIs)",
        description="Serve GLM-Image over the fal.ai API (sync runs at /fal-ai/glm-image[/image-to-image], "
        "the queue under /queue/...), the Runware API (POST /v1 and a WebSocket on /v1) and the OpenAI "
        "Images API (/v1/images/generations, /v1/images/edits). Point fal clients at it with "
        "FAL_RUN_HOST=HOST:PORT and "
        "FAL_QUEUE_RUN_HOST=HOST:PORT/queue. Every flag can also be set as GLM_IMAGE_<FLAG> in the "
        "environment.",
    )
    defaults = Settings()
    serve.add_argument("--host", default=defaults.host, help="address to bind (default %(default)s)")
    serve.add_argument("--port", type=int, default=defaults.port, help="port (default %(default)s)")
    serve.add_argument(
        "--data-dir",
        type=Path,
        default=defaults.data_dir,
        help="job database and generated files (default %(default)s)",
    )
    serve.add_argument(
        "--public-url",
        default=defaults.public_url,
        help="base URL clients reach this server at, for URLs in responses behind a reverse proxy "
        "(default: the URL of each request)",
    )
    serve.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        default=None,
        metavar="KEY",
        help="accept this API key (repeat for several; env GLM_IMAGE_API_KEYS=k1,k2). Without keys the "
        "server is open and binds only to loopback addresses",
    )
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        default=defaults.allow_unauthenticated,
        help="allow binding a non-loopback address with no API keys",
    )
    serve.add_argument("--ssl-certfile", type=Path, default=defaults.ssl_certfile, help="serve HTTPS")
    serve.add_argument("--ssl-keyfile", type=Path, default=defaults.ssl_keyfile)
    _model_flags(serve)
    return parser


def _output_paths(output: Path, count: int) -> list[Path]:
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i + 1}{output.suffix}") for i in range(count)]


OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def _request(args: argparse.Namespace) -> GenerationRequest:
    from .media.inputs import read_image

    if args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InvalidRequest(
            "output", f"unsupported file type {args.output.suffix!r}", ", ".join(OUTPUT_SUFFIXES)
        )

    references = tuple(read_image(path, field="image") for path in args.image)
    size = args.size or ("auto" if references else "square_hd")
    if size == "auto":
        if not references:
            raise InvalidRequest("size", "'auto' needs a reference image", "WIDTHxHEIGHT or a preset")
        width, height = size_like(references[0])
    else:
        width, height = parse_size(size)
    return GenerationRequest(
        prompt=args.prompt,
        width=width,
        height=height,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        seed=args.seed,
        num_images=args.num_images,
        references=references,
    )


class _ProgressBars:
    """A tqdm bar per stage, open from its first report until it completes (DiT and VAE interleave)."""

    def __init__(self) -> None:
        self._bars: dict[str, tqdm] = {}

    def __call__(self, progress: Progress) -> None:
        bar = self._bars.get(progress.stage)
        if bar is None:
            bar = self._bars[progress.stage] = tqdm(
                total=progress.total, desc=STAGE_LABELS[progress.stage], unit="", leave=True
            )
        bar.update(progress.done - bar.n)
        if bar.n >= bar.total:
            bar.close()
            del self._bars[progress.stage]

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


def generate(args: argparse.Namespace) -> int:
    request = _request(args)  # validate before the (slow) model load
    settings = Settings(model=args.model, device=args.device, dtype=args.dtype, cpu_offload=args.cpu_offload)
    if settings.model == "tiny":
        log.warning(TINY_NOTICE)
    from .model.engine import Engine
    from .model.loader import load_pipeline, quiet_library_logs

    quiet_library_logs()

    engine = Engine(load_pipeline(settings))
    bars = _ProgressBars()
    try:
        (result,) = engine.generate([request], on_progress=bars)
    finally:
        bars.close()
    for i, (path, image) in enumerate(
        zip(_output_paths(args.output, len(result.images)), result.images, strict=True)
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        print(f"{path}  {image.width}x{image.height}  seed {image_seed(result.seed, i)}")
    t = result.timings
    print(f"AR {t.ar:.2f}s  DiT {t.dit:.2f}s  VAE {t.vae:.2f}s", file=sys.stderr)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(args: argparse.Namespace) -> int:
    overrides = {
        name: getattr(args, name)
        for name in (
            "host",
            "port",
            "data_dir",
            "public_url",
            "allow_unauthenticated",
            "ssl_certfile",
            "ssl_keyfile",
            "model",
            "device",
            "dtype",
            "cpu_offload",
        )
    }
    if args.api_keys is not None:
        overrides["api_keys"] = args.api_keys
    settings = Settings(**overrides)
    if not settings.api_keys and not _is_loopback(settings.host) and not settings.allow_unauthenticated:
        print(
            f"glm-image: error: refusing to serve {settings.host} with no API keys: anyone who can reach it "
            "could use your GPU. Pass --api-key KEY, or --allow-unauthenticated if that is intended.",
            file=sys.stderr,
        )
        return 2
    if settings.model == "tiny":
        log.warning(TINY_NOTICE)
    import uvicorn

    from .api.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ssl_certfile=settings.ssl_certfile,
        ssl_keyfile=settings.ssl_keyfile,
        log_level="info",
        timeout_graceful_shutdown=5,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            return generate(args)
        if args.command == "serve":
            return serve(args)
    except InvalidRequest as exc:
        print(f"glm-image: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # e.g. weights that cannot be loaded
        print(f"glm-image: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
