"""Worker plans: `--workers PLAN` parsed (counts, roles, GPUs; one-line errors), the GPUs read without
torch (nvidia-smi and CUDA_VISIBLE_DEVICES, injected here), the default plans for given GPU memory
(24, 2x24, 48, 80 GB and mixes), the overrides that win, and `glm-image plan` as users run it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from glm_image_server import cli
from glm_image_server.config import Settings
from glm_image_server.worker import plan as plans
from glm_image_server.worker.gpus import Gpu, given_gpus, parse_gpu_memory, visible_gpus
from glm_image_server.worker.plan import WorkerSpec, api_only, make_plan, parse_workers
from glm_image_server.worker.plan_table import render, worker_lines


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("0", 0),
        ("2", 2),
        (" 3 ", 3),
        ("all", (WorkerSpec("all"),)),
        ("prior@0,decode@1", (WorkerSpec("prior", 0), WorkerSpec("decode", 1))),
        ("prior, decode, decode", (WorkerSpec("prior"), WorkerSpec("decode"), WorkerSpec("decode"))),
        ("all@0,all@1", (WorkerSpec("all", 0), WorkerSpec("all", 1))),
    ],
)
def test_plans_parse(text: str, parsed) -> None:
    assert parse_workers(text) == parsed


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("-1", "greater than or equal to 0"),
        ("gpu", "'gpu' in 'gpu': expected a worker count, or roles (all, prior, decode)"),
        ("prior,,decode", "'' in 'prior,,decode'"),
        ("prior@x", "'prior@x': a GPU is its number among the visible GPUs, e.g. prior@0"),
        ("decode@", "'decode@'"),
        ("2,prior", "'2' in '2,prior'"),
    ],
)
def test_bad_plans_say_what_is_wrong_in_one_line(text: str, said: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_workers(text)
    assert said in str(raised.value) and "\n" not in str(raised.value)


def test_the_setting_takes_counts_and_plans(monkeypatch) -> None:
    assert Settings(workers=0).workers == "0" and api_only(Settings(workers=0).workers)
    assert Settings(workers=" prior@0 , decode@1").workers == "prior@0,decode@1"
    assert not api_only(Settings(workers="prior").workers) and not api_only(Settings().workers)
    monkeypatch.setenv("GLM_IMAGE_WORKERS", "2")
    assert Settings().workers == "2"
    monkeypatch.setenv("GLM_IMAGE_WORKERS", "")
    assert Settings().workers is None  # an empty variable: the default plan
    with pytest.raises(ValidationError, match="expected a worker count"):
        Settings(workers="prior;decode")


def test_serve_refuses_a_bad_plan_in_one_line(capsys, monkeypatch) -> None:
    assert cli.main(["serve", "--workers", "prior@0,decodr@1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("glm-image: error: --workers: 'decodr@1' in 'prior@0,decodr@1'")
    assert "Value error" not in err and err.count("\n") == 1
    monkeypatch.setattr(plans, "visible_gpus", lambda: [Gpu(0, "0", 80.0)])
    assert cli.main(["serve", "--workers", "prior@0,decode@1"]) == 2
    assert "decode@1: GPU 1 is not visible (only GPU 0 is visible)" in capsys.readouterr().err


# GPUs, read without torch.

SMI = [("0", "GPU-aaaa-1111", 81559.0), ("1", "GPU-bbbb-2222", 24564.0), ("2", "GPU-cccc-3333", float("nan"))]


def test_every_gpu_nvidia_smi_lists() -> None:
    gpus = visible_gpus(lambda: SMI, environ={})
    assert [(g.index, g.device) for g in gpus] == [(0, "0"), (1, "1"), (2, "2")]
    assert gpus[0].total_gib == pytest.approx(79.65, abs=0.01) and gpus[1].total_gib == pytest.approx(
        23.99, abs=0.01
    )
    assert gpus[2].total_gib is None  # nvidia-smi said [N/A]


def test_cuda_visible_devices_decides_which_and_in_what_order() -> None:
    gpus = visible_gpus(lambda: SMI, environ={"CUDA_VISIBLE_DEVICES": "1,GPU-aaaa"})
    assert [(g.index, g.device) for g in gpus] == [(0, "1"), (1, "GPU-aaaa")]
    assert gpus[0].total_gib == pytest.approx(23.99, abs=0.01) and gpus[1].total_gib == pytest.approx(
        79.65, abs=0.01
    )
    assert visible_gpus(lambda: SMI, environ={"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert visible_gpus(lambda: SMI, environ={"CUDA_VISIBLE_DEVICES": ""}) == []
    # No nvidia-smi, but devices named: kept, their size unknown.
    assert visible_gpus(lambda: [], environ={"CUDA_VISIBLE_DEVICES": "3"}) == [Gpu(0, "3", None)]
    assert visible_gpus(lambda: [], environ={}) == []


@pytest.mark.parametrize(
    ("text", "gib"),
    [("24GB", 24), ("24gib", 24), ("24G", 24), ("24", 24), ("24564MiB", 23.988), ("1T", 1024)],
)
def test_gpu_memory_sizes(text: str, gib: float) -> None:
    assert parse_gpu_memory(text) == pytest.approx(gib, abs=0.001)


@pytest.mark.parametrize("text", ["", "24XB", "-8GB", "0", "GB"])
def test_bad_gpu_memory_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="expected a size such as 24GB"):
        parse_gpu_memory(text)


# Default plans for given GPUs.


def layout(plan) -> list[tuple[str, int | None, str, str]]:
    return [(e.role, e.gpu.index if e.gpu else None, e.quantize, e.offload) for e in plan.entries]


def test_one_24gb_gpu_runs_the_whole_model_quantized() -> None:
    plan = make_plan(Settings(), given_gpus(["24GB"]))
    # bf16 (36.9 GiB) does not fit, nor int8 kept whole (22.9 GiB > 95% of 24); int8 with model offload does.
    assert layout(plan) == [("all", 0, "int8", "model")]
    assert plan.fits_every_gpu and plan.gpu_gib(plan.gpus[0], 1024) < 24 * plans.FIT_FRACTION


def test_two_24gb_gpus_are_a_prior_and_a_decode_worker_in_bf16() -> None:
    plan = make_plan(Settings(), given_gpus(["24GB", "24GB"]))
    assert layout(plan) == [("prior", 0, "none", "none"), ("decode", 1, "none", "none")]
    assert plan.fits_every_gpu
    assert [round(plan.gpu_gib(g, 1024), 1) for g in plan.gpus] == [20.6, 18.1]
    assert not plan.fits(plan.gpus[1], 2048)  # the VAE decode at 2048² (27.1 GiB) does not


@pytest.mark.parametrize("size", ["48GB", "80GB"])
def test_a_48_or_80gb_gpu_runs_the_whole_model_in_bf16(size: str) -> None:
    plan = make_plan(Settings(), given_gpus([size]))
    assert layout(plan) == [("all", 0, "none", "none")]
    assert round(plan.gpu_gib(plan.gpus[0], 1024), 1) == 36.9
    assert plan.fits(plan.gpus[0], 2048) == (size == "80GB")  # 45.9 GiB at 2048²


def test_mixed_gpus() -> None:
    assert layout(make_plan(Settings(), given_gpus(["80GB", "24GB"]))) == [
        ("all", 0, "none", "none"),
        ("decode", 1, "none", "none"),  # a small GPU left over adds a decode worker
    ]
    # The larger of a pair runs the AR model; a third small GPU adds a decode worker.
    assert layout(make_plan(Settings(), given_gpus(["24GB", "32GB", "24GB"]))) == [
        ("decode", 0, "none", "none"),
        ("prior", 1, "none", "none"),
        ("decode", 2, "none", "none"),
    ]
    # A GPU of unknown size is taken to be big enough (one `all` worker, as before plans).
    assert layout(make_plan(Settings(), [Gpu(0, "0", None)])) == [("all", 0, "none", "none")]


def test_quantization_is_one_choice_for_the_whole_plan() -> None:
    """A pair of 16 GB GPUs needs int8 for the AR model: the decode worker quantizes too (a stage's bytes
    must not depend on which worker ran it)."""
    plan = make_plan(Settings(), given_gpus(["16GB", "16GB"]))
    assert layout(plan) == [("prior", 0, "int8", "none"), ("decode", 1, "int8", "none")]


def test_no_gpu_one_worker_on_the_cpu() -> None:
    plan = make_plan(Settings(), [])
    assert layout(plan) == [("all", None, "none", "none")] and plan.fits_every_gpu
    assert plans.plan_for(Settings(device="cpu"), given_gpus(["80GB"])).entries[0].gpu is None


def test_a_plan_that_does_not_fit_says_so() -> None:
    plan = make_plan(Settings(), given_gpus(["4GB"]))
    assert layout(plan) == [("all", 0, "int8", "group")]  # the last resort
    assert not plan.fits_every_gpu


# What the user says wins.


def test_counts_spread_over_the_gpus() -> None:
    plan = make_plan(Settings(workers=3), given_gpus(["80GB", "80GB"]))
    assert [(e.worker_id, e.role, e.gpu.index) for e in plan.entries] == [
        ("w0", "all", 0),
        ("w1", "all", 1),
        ("w2", "all", 0),
    ]
    assert make_plan(Settings(workers=0), given_gpus(["80GB"])).entries == ()
    # Two whole models on one 80 GB GPU (73.8 GiB) fit in bf16.
    assert layout(make_plan(Settings(workers=2), given_gpus(["80GB"]))) == [("all", 0, "none", "none")] * 2


def test_roles_are_placed_as_written() -> None:
    gpus = given_gpus(["80GB", "80GB"])
    assert layout(make_plan(Settings(workers="decode@1,prior@1"), gpus)) == [
        ("decode", 1, "none", "none"),
        ("prior", 1, "none", "none"),
    ]
    assert layout(make_plan(Settings(workers="prior,decode,decode"), gpus)) == [
        ("prior", 0, "none", "none"),
        ("decode", 1, "none", "none"),
        ("decode", 0, "none", "none"),
    ]
    with pytest.raises(ValueError, match="prior@2: GPU 2 is not visible"):
        make_plan(Settings(workers="prior@2"), gpus)
    assert layout(make_plan(Settings(workers="prior,decode"), [])) == [
        ("prior", None, "none", "none"),
        ("decode", None, "none", "none"),
    ]
    with pytest.raises(ValueError, match="no GPU is visible"):
        make_plan(Settings(workers="prior@0"), [])


def test_quantize_and_offload_given_are_kept(monkeypatch) -> None:
    gpus = given_gpus(["24GB"])
    assert layout(make_plan(Settings(quantize="fp8"), gpus)) == [("all", 0, "fp8", "model")]
    assert layout(make_plan(Settings(quantize="none"), gpus)) == [("all", 0, "none", "model")]
    assert layout(make_plan(Settings(offload="group"), gpus)) == [("all", 0, "none", "group")]
    assert layout(make_plan(Settings(cpu_offload=True), gpus)) == [("all", 0, "none", "model")]
    monkeypatch.setenv("GLM_IMAGE_QUANTIZE", "int8")  # from the environment too
    assert layout(make_plan(Settings(), given_gpus(["80GB"]))) == [("all", 0, "int8", "none")]
    # Given and not fitting: kept, and said.
    plan = make_plan(Settings(quantize="none", offload="none"), gpus)
    assert layout(plan) == [("all", 0, "none", "none")] and not plan.fits_every_gpu


def test_worker_lines_as_serve_logs_them() -> None:
    plan = make_plan(Settings(), given_gpus(["24GB", "24GB"]))
    assert worker_lines(plan) == [
        "worker w0: role prior, GPU 0, quantize none, offload none, expected 20.6 GiB at 1024², "
        "21.5 GiB at 2048²",
        "worker w1: role decode, GPU 1, quantize none, offload none, expected 18.1 GiB at 1024², "
        "27.1 GiB at 2048²",
    ]
    # On the CPU, or a GPU of unknown size, no figures: they are a GPU's.
    assert worker_lines(make_plan(Settings(), [])) == [
        "worker w0: role all, CPU, quantize none, offload none"
    ]


def test_serve_plans_no_memory_for_the_tiny_model() -> None:
    """The figures are the real model's: with the tiny one, `serve` keeps one `all` worker per GPU."""
    gpus = given_gpus(["24GB", "24GB"])
    assert layout(plans.plan_for(Settings(model="tiny"), gpus)) == [
        ("all", 0, "none", "none"),
        ("all", 1, "none", "none"),
    ]
    real = plans.plan_for(Settings(model="zai-org/GLM-Image"), gpus)
    assert layout(real) == [("prior", 0, "none", "none"), ("decode", 1, "none", "none")]
    assert layout(plans.plan_for(Settings(model="tiny"), gpus, real_model=True)) == layout(real)


def test_the_table_states_each_figure_with_its_source() -> None:
    text = render(make_plan(Settings(), given_gpus(["24GB", "24GB"])))
    assert "GPU 0: 24.0 GiB, expected 20.6 GiB at 1024² (fits), 21.5 GiB at 2048² (fits)" in text
    assert "GPU 1: 24.0 GiB, expected 18.1 GiB at 1024² (fits), 27.1 GiB at 2048² (does NOT fit)" in text
    assert "   16.61 GiB  AR language model weights [1]" in text
    assert "[1] meta-device parameter counts (bench/full_size.py)" in text
    assert "AR KV cache, 8 rows at 1024²" in text and "VAE decode at 2048²" in text
    assert render(make_plan(Settings(workers=0), [])).startswith("no workers: the API alone")


# `glm-image plan`.


def test_plan_command_for_one_24gb_gpu(capsys) -> None:
    assert cli.main(["plan", "--gpu-memory", "24GB"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[1].split()
    assert first[:6] == ["w0", "all", "GPU", "0", "int8", "model"]
    assert float(first[6]) < 24  # the stated total at 1024², GiB
    assert "fits: yes at 1024²" in out


def test_plan_command_for_two_24gb_gpus(capsys) -> None:
    assert cli.main(["plan", "--gpu-memory", "24GB", "--gpu-memory", "24GB"]) == 0
    rows = [line.split()[:4] for line in capsys.readouterr().out.splitlines()[1:3]]
    assert rows == [["w0", "prior", "GPU", "0"], ["w1", "decode", "GPU", "1"]]


def test_plan_command_exits_1_when_it_does_not_fit(capsys) -> None:
    assert (
        cli.main(
            ["plan", "--gpu-memory", "48GB", "--quantize", "none", "--offload", "none", "--workers", "2"]
        )
        == 1
    )
    assert "does NOT fit" in capsys.readouterr().out
    assert cli.main(["plan", "--gpu-memory", "24XB"]) == 2
    assert "--gpu-memory '24XB'" in capsys.readouterr().err


def test_plan_command_runs_as_a_process_without_torch() -> None:
    """The API process plans its workers; it must not import torch to do so."""
    code = (
        "import sys; from glm_image_server.cli import main; "
        "code = main(['plan', '--gpu-memory', '80GB']); assert 'torch' not in sys.modules, 'torch imported'; "
        "sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].split()[:6] == ["w0", "all", "GPU", "0", "none", "none"]
