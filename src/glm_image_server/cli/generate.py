"""`glm-image generate`: a prompt (and up to 4 reference images) to image files without a server, through
the engine and post stage a server's worker uses (safety check, text check and best of N, output format).
The request is built here once and validated by core as every dialect's is; without --seed, core picks."""

from __future__ import annotations

import argparse
import base64
import contextlib
import logging
import tempfile
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ..config import Settings
from ..core.request import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS_CLI,
    MAX_CANDIDATES,
    SIZE_PRESETS,
    GenerationRequest,
    InvalidRequest,
    OutputFormat,
    OutputSpec,
    parse_size,
    size_like,
    with_candidates,
)
from ..core.results import JobResult, Progress
from ..media.encode import EXTENSIONS
from ..media.storage import LocalStorage, Storage
from ..slices import EngineSettings, PostSettings, PricingSettings
from .flags import MODEL_FLAGS, TINY_NOTICE, add_settings_flags, check_device, settings_from

log = logging.getLogger("glm_image_server")

STAGE_LABELS = {"ar": "AR tokens", "dit": "DiT steps", "vae": "VAE decode"}
FORMATS: dict[str, OutputFormat] = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
# The internal request's fields that `generate` spells otherwise than --field-name on the command line.
REQUEST_FLAGS = {
    "num_inference_steps": "--steps",
    "guidance_scale": "--guidance",
    "width": "--size",
    "height": "--size",
    "references": "--image",
    "output_format": "--format",
    "text_check_candidates": "--candidates",
    "prompt": "the prompt",
}


def flag_error(exc: InvalidRequest) -> str:
    """An invalid request in the words of the command line: `--steps: must be between 1 and 100...`."""
    name = exc.field.split("[")[0]
    return f"{REQUEST_FLAGS.get(name, '--' + name.replace('_', '-'))}: {exc.explanation}"


def add_parser(commands: argparse._SubParsersAction) -> None:
    gen = commands.add_parser(
        "generate",
        help="generate images from a prompt (and up to 4 reference images) into files",
        description="Text-to-image, or an edit of up to 4 reference images, written to image files after "
        "the server's post stage: the safety check, the text check and the output format.",
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
        help="reference image for an edit (up to 4)",
    )
    gen.add_argument(
        "--size",
        help=f"WIDTHxHEIGHT (multiples of 32, 64..2048), 'auto', or one of {', '.join(SIZE_PRESETS)}. "
        "Default: square_hd (1024x1024); with reference images, auto: the first reference's aspect ratio "
        "at about one megapixel",
    )
    gen.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS_CLI,
        help="DiT denoising steps (default %(default)s, the model card's)",
    )
    gen.add_argument(
        "--guidance",
        type=float,
        default=DEFAULT_GUIDANCE,
        help="classifier-free guidance (default %(default)s)",
    )
    gen.add_argument("--seed", type=int, help="random seed; image i uses seed+i (default: random)")
    gen.add_argument(
        "-n", "--num-images", type=int, default=1, help="images to generate (default %(default)s)"
    )
    gen.add_argument(
        "-o",
        "--output",
        type=Path,
        help="output file: .png, .jpg, .jpeg or .webp; with -n > 1, NAME-1.png, NAME-2.png, ... "
        "(default out.png, or out.jpg / out.webp with --format)",
    )
    gen.add_argument("--format", choices=("png", "jpeg", "webp"), help="output format (default: -o's suffix)")
    gen.add_argument(
        "--safety-check",
        action=argparse.BooleanOptionalAction,
        help="check each image for nudity and black out what it flags, as the APIs' safety checker does "
        "(GLM_IMAGE_SAFETY_CHECKER); default GLM_IMAGE_SAFETY_DEFAULT (on)",
    )
    gen.add_argument(
        "--text-check",
        action="store_true",
        help="read back the prompt's quoted text in each image (OCR; GLM_IMAGE_TEXT_CHECKER), scores printed",
    )
    gen.add_argument(
        "--candidates",
        type=int,
        default=1,
        metavar="N",
        help=f"best of N (1..{MAX_CANDIDATES}): make N candidates (seeds seed..seed+N-1) and keep the -n "
        "best by text check (implies --text-check)",
    )
    add_settings_flags(gen, MODEL_FLAGS)


def output_file(args: argparse.Namespace) -> tuple[Path, OutputFormat]:
    """The output file and its format: -o's suffix names the format; --format alone names out.<ext>."""
    if args.output is None:
        fmt = args.format or "png"
        return Path(f"out.{EXTENSIONS[fmt]}"), fmt
    named = FORMATS.get(args.output.suffix.lower())
    if named is None:
        raise InvalidRequest("output", f"unsupported file type {args.output.suffix!r}", ", ".join(FORMATS))
    if args.format not in (None, named):
        raise InvalidRequest("output_format", f"{args.format} does not match {args.output}", named)
    return args.output, named


def build_request(
    args: argparse.Namespace, settings: Settings, fmt: OutputFormat
) -> tuple[GenerationRequest, OutputSpec, tuple[Image.Image, ...]]:
    """The request, what to do with its images, and its decoded reference images."""
    from ..media.inputs import read_image

    references = tuple(read_image(path, "image", settings.input_max_pixels) for path in args.image)
    size = args.size or ("auto" if references else "square_hd")
    if size == "auto" and not references:
        raise InvalidRequest("size", "'auto' needs a reference image", "WIDTHxHEIGHT or a preset")
    width, height = size_like(references[0]) if size == "auto" else parse_size(size)
    request = GenerationRequest(
        prompt=args.prompt,
        width=width,
        height=height,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        num_images=args.num_images,
        # Locators must be URLs, data URIs or uploads (file:// is no locator): the files as data URIs.
        references=tuple(
            "data:;base64," + base64.b64encode(Path(path).read_bytes()).decode() for path in args.image
        ),
        **({} if args.seed is None else {"seed": args.seed}),
    )
    safety = settings.safety_default if args.safety_check is None else args.safety_check
    request, output = with_candidates(
        request, OutputSpec(format=fmt, safety_check=safety), args.text_check, args.candidates
    )
    return request, output, references


class _ProgressBars:
    """A tqdm bar per stage, open from its first report until it completes (DiT and VAE interleave)."""

    def __init__(self) -> None:
        self._bars: dict[str, tqdm] = {}  # not a dict subclass: an empty one is falsy, and no callback

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


def _post_log(message: str, level: str) -> None:
    log.log(getattr(logging, level), message)


def write_outputs(storage: Storage, result: JobResult, output: Path) -> None:
    """The result's files to `output` (NAME-1, NAME-2, ... for several), then a line for each: its size,
    seed and what the post stage found in it."""
    from ..post.stage import describe

    paths = [output]
    if len(result.images) > 1:
        paths = [output.with_name(f"{output.stem}-{i + 1}{output.suffix}") for i in range(len(result.images))]
    for path, image in zip(paths, result.images, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(storage.read(image.key))
    checks = result.text_checks or (None,) * len(paths)
    for path, image, nsfw, check in zip(paths, result.images, result.has_nsfw_concepts, checks, strict=True):
        flagged = "  NSFW: replaced with black" if nsfw else ""
        text = f"  text {describe(check)}" if check else ""
        print(f"{path}  {image.width}x{image.height}  seed {image.seed}{flagged}{text}")


def generate(args: argparse.Namespace) -> int:
    settings = settings_from(args, MODEL_FLAGS)
    output, fmt = output_file(args)
    request, spec, references = build_request(args, settings, fmt)  # validated before the (slow) load
    check_device(settings.device)
    if settings.model == "tiny":
        log.warning(TINY_NOTICE)
    from ..engine.loader import load_engine
    from ..post.stage import finish_images, load_post  # not before serve sets up metrics: not at the top

    with tempfile.TemporaryDirectory(prefix="glm-image-") as scratch:
        pricing = PricingSettings.from_settings(settings)
        post = load_post(PostSettings.from_settings(settings), pricing, LocalStorage(Path(scratch)))
        engine = load_engine(EngineSettings.from_settings(settings))
        with contextlib.closing(_ProgressBars()) as bars:
            (generated,) = engine.generate([request], [references], on_progress=bars)
        result = finish_images(post, generated, spec, "out", request.prompt, {}, _post_log)
        write_outputs(post.storage, result, output)
    return 0
