"""`tritonforge smoke --gpu`: the step plan, the agreement figures, the report, the executor, the no-GPU exit.

The GPU steps themselves (engine build, serving in the NGC container) cannot run here and are not
faked: what is tested is the plan of them (which precisions per compute capability, by the plan's own
rules; every command parsed by the real CLI), the executor's bookkeeping with real step handlers, and
the agreement and streaming steps against a real CPU Triton serving the same `tensorrt_llm` /
`ensemble` contract the GPU deployment serves.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tritonforge import smoke
from tritonforge.errors import UserError
from tritonforge.smoke import SmokeConfig, Step, token_agreement

IMAGE = "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"


def cfg_for(tmp_path: Path, sm: int, **kw) -> SmokeConfig:
    return SmokeConfig(
        out_dir=tmp_path / "smoke", image=IMAGE, sm=sm, gpu_type=smoke.catalog_for(None, sm), **kw
    )


# ------------------------------------------------------------------------------------------- plan


@pytest.mark.parametrize(
    ("sm", "expected"),
    [
        (80, ["fp16"]),
        (89, ["fp16", "fp8"]),
        (90, ["fp16", "fp8"]),
        (100, ["fp16", "fp8"]),
        (120, ["fp16", "fp8"]),
    ],
)
def test_precisions_per_compute_capability(tmp_path: Path, sm: int, expected: list[str]) -> None:
    cfg = cfg_for(tmp_path, sm)
    run, skipped = smoke.plan_precisions(cfg)
    assert run == expected
    if "fp8" not in run:
        assert "fp8" in skipped and "sm89" in skipped["fp8"]  # the planner rule's own message
    steps = smoke.plan_steps(cfg)
    assert steps[0].kind == "doctor"
    per = ["spec", "build", "emit", "serve", "agreement", "stream-http", "stream-grpc", "loadtest", "stop"]
    assert [s.name for s in steps[1:]] == [f"{p}/{k}" for p in expected for k in per]
    assert [s.name for s in steps if s.cleanup] == [f"{p}/stop" for p in expected]


def test_catalog_gpu_for_a_compute_capability() -> None:
    assert smoke.catalog_for("NVIDIA H200", 90) == "H200"
    assert smoke.catalog_for("NVIDIA GeForce RTX 4090", 89) == "L40S"  # unlisted: same sm from the catalog
    assert smoke.catalog_for(None, 120) == "B200"
    with pytest.raises(UserError):
        smoke.catalog_for(None, 75)


def test_smoke_specs_are_valid_and_pass_the_rules(tmp_path: Path) -> None:
    from tritonforge.builder.spec import DeploymentSpec

    cfg = cfg_for(tmp_path, 90)
    for p in ("fp16", "fp8"):
        spec = DeploymentSpec.model_validate(smoke.smoke_spec(cfg, p))
        tier = spec.tiers[0]
        assert (
            tier.model == "builtin:demo" and tier.runtime.value == "trtllm-engine" and tier.dtype == "float16"
        )
        assert tier.quantization.format.value == ("fp8" if p == "fp8" else "none")
        assert spec.triton.image == IMAGE and spec.triton.trtllm_version == "1.2.1"  # what the image ships
        assert smoke.precision_problem(cfg, p) is None


def test_commands_parse_with_the_real_cli(tmp_path: Path) -> None:
    """Every command the run would start is accepted, option by option, by the command it calls."""
    import click

    from tritonforge.cli import cli

    steps = smoke.plan_steps(
        cfg_for(tmp_path, 90, load_seconds=30, http_port=19000, grpc_port=19001, metrics_port=19002)
    )
    commands = [s for s in steps if s.argv]
    assert {s.name.split("/")[1] for s in commands} == {"build", "emit", "loadtest"}
    for s in commands:
        assert list(s.argv[:3]) == [sys.executable, "-m", "tritonforge"]
        args = list(s.argv[3:])
        group_ctx = cli.make_context("tritonforge", list(args), resilient_parsing=True)
        name, cmd, rest = cli.resolve_command(group_ctx, args)
        if isinstance(cmd, click.Group):  # loadtest: `run` is its default subcommand
            sub = cmd.get_command(group_ctx, "run")
            ctx = sub.make_context("run", rest)
        else:
            ctx = cmd.make_context(name, rest)
        if name == "build":
            assert ctx.params["docker_image"] == IMAGE and ctx.params["as_json"]
        if name == "loadtest":
            assert ctx.params["duration"] == "30s" and ctx.params["url"] == "http://127.0.0.1:19000"
            assert ctx.params["model"] == "ensemble" and ctx.params["users"] == 8
    serve = next(s for s in steps if s.kind == "serve")
    assert serve.params["ports"] == [19000, 19001, 19002] and serve.params["image"] == IMAGE


def test_runtime_registry(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no vllm target"):
        smoke.plan_steps(cfg_for(tmp_path, 90, runtime="vllm"))
    assert set(smoke.RUNTIMES) == {"trtllm-engine", "trtllm-pytorch"}


@pytest.mark.parametrize(("sm", "expected"), [(80, ["fp16"]), (90, ["fp16", "fp8"])])
def test_pytorch_runtime_steps(tmp_path: Path, sm: int, expected: list[str]) -> None:
    """trtllm-pytorch: per precision, the HF checkpoint export replaces the engine build; same shared steps."""
    from tritonforge.builder.spec import DeploymentSpec

    cfg = cfg_for(tmp_path, sm, runtime="trtllm-pytorch")
    steps = smoke.plan_steps(cfg)
    per = ["spec", "export", "emit", "serve", "agreement", "stream-http", "stream-grpc", "loadtest", "stop"]
    assert [s.name for s in steps[1:]] == [f"{p}/{k}" for p in expected for k in per]
    for p in expected:
        export = next(s for s in steps if s.name == f"{p}/export")
        assert export.argv[3:5] == ("build", str(tmp_path / "smoke" / p / "spec.yaml"))
        assert "--docker" in export.argv and "HF checkpoint" in export.params["checkpoint"]
        spec = DeploymentSpec.model_validate(smoke.smoke_spec(cfg, p))
        assert spec.tiers[0].runtime.value == "trtllm-pytorch"
        assert smoke.precision_problem(cfg, p) is None
    assert not any(s.name.endswith("/build") for s in steps)


# -------------------------------------------------------------------------------------- agreement


def test_token_agreement_figures() -> None:
    same = token_agreement([[1, 2, 3], [4, 5]], [[1, 2, 3], [4, 5]])
    assert (same["first_token"], same["exact"], same["prefix"], same["positional"]) == (1.0, 1.0, 1.0, 1.0)
    assert [p["first_divergence"] for p in same["per_prompt"]] == [None, None]

    a = token_agreement([[1, 2, 3, 4], [7, 8, 9, 9]], [[1, 2, 0, 4], [6, 8, 9, 9]])
    assert a["first_token"] == 0.5 and a["exact"] == 0.0
    assert [p["first_divergence"] for p in a["per_prompt"]] == [2, 0]
    assert a["prefix"] == round((2 / 4 + 0 / 4) / 2, 4)
    assert a["positional"] == round(6 / 8, 4)

    # one engine returns the end token, the other stops before it: the same output
    eos = token_agreement([[5, 6, 2]], [[5, 6]], end_id=2)
    assert eos["exact"] == 1.0
    # shorter output: positions count against the longer side
    short = token_agreement([[5, 6, 7, 8]], [[5, 6]])
    assert (
        short["exact"] == 0.0 and short["prefix"] == 0.5 and short["per_prompt"][0]["first_divergence"] == 2
    )
    assert token_agreement([[3]], [[]])["first_token"] == 0.0
    with pytest.raises(ValueError):
        token_agreement([[1]], [[1], [2]])


# ------------------------------------------------------------------------------ executor + report


def test_failed_step_stops_the_run_and_the_report_says_why(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, 90)
    spec_step = next(s for s in smoke.plan_steps(cfg) if s.name == "fp16/spec")
    fail = Step(
        "fp16/build",
        "command",
        "fp16",
        (
            sys.executable,
            "-c",
            "import sys; print('building'); print('error: no space left', file=sys.stderr); sys.exit(3)",
        ),
        params={"log": str(tmp_path / "build.log")},
        timeout_s=60,
    )
    after = Step(
        "fp16/emit",
        "command",
        "fp16",
        (sys.executable, "-c", "open('SHOULD-NOT-RUN', 'w')"),
        params={"log": str(tmp_path / "emit.log")},
    )
    stop = Step("fp16/stop", "stop", "fp16", params={"container": "never-started"}, cleanup=True)
    lines: list[str] = []
    ex = smoke.Executor(cfg, progress=lines.append)
    report = ex.run([spec_step, fail, after, stop], {"fp8": "not on this GPU"})
    statuses = {s["name"]: s["status"] for s in report["steps"]}
    assert statuses == {
        "fp16/spec": "ok",
        "fp16/build": "failed",
        "fp16/emit": "skipped",
        "fp16/stop": "skipped",
    }
    assert report["ok"] is False and report["failed_step"] == "fp16/build"
    assert "exit code 3" in report["reason"] and "error: no space left" in report["reason"]
    assert not Path("SHOULD-NOT-RUN").exists()
    assert (cfg.out_dir / "fp16" / "spec.yaml").is_file()  # the real write-spec handler ran
    assert report["skipped_precisions"] == {"fp8": "not on this GPU"}
    assert any("FAILED" in ln for ln in lines) and any(
        ln.startswith("[smoke 2/4] fp16/build") for ln in lines
    )
    assert smoke.report_problems(report) == []
    path = smoke.write_report(cfg.out_dir, report)
    back = json.loads(path.read_text())
    assert back["failed_step"] == "fp16/build" and back["timings_s"]["fp16/build"] >= 0
    assert [p.name for p in cfg.out_dir.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_report_schema_problems(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, 90)
    ok = smoke.build_report(
        cfg,
        [
            {
                "name": "doctor",
                "kind": "doctor",
                "precision": None,
                "command": "x",
                "cleanup": False,
                "status": "ok",
                "seconds": 1.0,
                "details": {},
                "error": None,
            }
        ],
    )
    assert ok["ok"] is True and smoke.report_problems(ok) == []
    bad = {**ok, "ok": False}
    assert "ok is false but failed_step is empty" in smoke.report_problems(bad)
    weird = {**ok, "steps": [{**ok["steps"][0], "status": "maybe"}]}
    assert any("status 'maybe'" in p for p in smoke.report_problems(weird))
    with pytest.raises(ValueError):
        smoke.write_report(tmp_path, {**ok, "schema": "other"})
    assert not (tmp_path / smoke.REPORT).exists()  # never half a result
    empty = smoke.build_report(cfg, [])
    assert empty["ok"] is False


@pytest.mark.server
def test_agreement_and_streams_against_a_real_cpu_triton(tiny_demo_server, tmp_path: Path) -> None:
    """The agreement and streaming steps against real Triton serving the tiny model with the CPU reference
    `tensorrt_llm` model: same weights, greedy, FP32 on both sides, so the tokens must agree."""
    srv = tiny_demo_server
    cfg = cfg_for(tmp_path, 90)
    ex = smoke.Executor(cfg)
    steps = [
        Step(
            "cpu/agreement",
            "agreement",
            "fp16",
            params={
                "url": srv.grpc_url,
                "model": "tensorrt_llm",
                "prompts": list(smoke.PROMPTS[:4]),
                "max_tokens": 12,
                "model_ref": "builtin:tiny",
                "min_first_token_agreement": 0.9,
            },
        ),
        Step(
            "cpu/stream-http",
            "stream-http",
            "fp16",
            params={"url": srv.http_url, "model": "ensemble", "prompt": smoke.PROMPTS[0], "max_tokens": 8},
        ),
        Step(
            "cpu/stream-grpc",
            "stream-grpc",
            "fp16",
            params={
                "url": srv.grpc_url,
                "http_url": srv.http_url,
                "model": "ensemble",
                "prompt": smoke.PROMPTS[1],
                "max_tokens": 8,
            },
        ),
    ]
    report = ex.run(steps)
    assert report["ok"], report["reason"]
    a = report["agreement"]["fp16"]
    assert a["prompts"] == 4 and a["first_token"] == 1.0 and a["exact"] == 1.0
    assert all(p["tokens"] > 0 for p in a["per_prompt"])  # output_ids really came back
    for s in report["steps"][1:]:
        assert s["details"]["chunks"] >= 2 and s["details"]["text"]


def test_agreement_step_fails_on_a_different_model(tiny_demo_server, tmp_path: Path) -> None:
    """The same prompts against the tiny model, compared with another model's reference: a broken
    deployment (wrong weights) is caught at the first token."""
    pytest.importorskip("tritonclient.grpc")
    srv = tiny_demo_server
    step = Step(
        "cpu/agreement",
        "agreement",
        "fp16",
        params={
            "url": srv.grpc_url,
            "model": "tensorrt_llm",
            "prompts": list(smoke.PROMPTS[:6]),
            "max_tokens": 6,
            "model_ref": "builtin:tiny-draft",
            "min_first_token_agreement": 0.9,
        },
    )
    report = smoke.Executor(cfg_for(tmp_path, 90)).run([step])
    assert report["ok"] is False and report["failed_step"] == "cpu/agreement"
    assert "first tokens agree on" in report["reason"]


# ---------------------------------------------------------------------------------------- the CLI


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this host has an NVIDIA driver")
def test_no_gpu_exits_2_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "smoke-out"
    p = subprocess.run(
        [sys.executable, "-m", "tritonforge", "smoke", "--gpu", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and "no NVIDIA GPU on this host" in p.stderr
    assert "Traceback" not in p.stderr and not out.exists()


def test_print_lists_the_steps(tmp_path: Path) -> None:
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "tritonforge",
            "smoke",
            "--gpu",
            "--print",
            "--compute-cap",
            "8.0",
            "--image",
            IMAGE,
            "-o",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("smoke plan for sm80 (A100-80GB in the planner)")
    assert any("fp16/build" in ln and f"--docker {IMAGE}" in ln for ln in lines)
    assert not any("fp8/build" in ln for ln in lines)
    assert "fp8: skipped on this GPU" in p.stdout
    assert not (tmp_path / "s").exists()  # --print runs nothing
    bad = subprocess.run(
        [sys.executable, "-m", "tritonforge", "smoke", "--gpu", "--runtime", "vllm"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "use --runtime trtllm-engine, trtllm-pytorch" in bad.stderr


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client here")
def test_serve_step_without_a_docker_engine_fails_with_dockers_reason(
    tiny_demo_repo: Path, tmp_path: Path
) -> None:
    """The real serve step on this machine (docker client, no engine): docker's own error ends up in the
    report, the stop step still runs, and no server is left behind."""
    from tritonforge.builder.doctor import run_command

    if run_command(["docker", "info", "--format", "{{.ServerVersion}}"], 30).rc == 0:
        pytest.skip("a Docker engine is reachable here")
    cfg = cfg_for(tmp_path, 90)
    serve = Step(
        "fp16/serve",
        "serve",
        "fp16",
        params={
            "repo": str(tiny_demo_repo),
            "image": IMAGE,
            "container": "tritonforge-smoke-test",
            "http_url": cfg.http_url,
            "ports": [cfg.http_port, cfg.grpc_port, cfg.metrics_port],
            "log": str(tmp_path / "server.log"),
        },
        timeout_s=60,
    )
    stop = Step("fp16/stop", "stop", "fp16", params={"container": "tritonforge-smoke-test"}, cleanup=True)
    ex = smoke.Executor(cfg)
    report = ex.run([serve, stop])
    assert report["failed_step"] == "fp16/serve"
    assert "the container exited" in report["reason"] and "docker daemon" in report["reason"].lower()
    assert [s["status"] for s in report["steps"]] == ["failed", "ok"]
    assert ex.servers == {}


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_gpu_smoke_runs_the_smoke_command() -> None:
    root = Path(__file__).resolve().parent.parent
    p = subprocess.run(
        ["make", "-n", "gpu-smoke", f"IMAGE={IMAGE}", "SMOKE_OUT=out/s1"],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert f".venv/bin/tritonforge smoke --gpu --image {IMAGE} -o out/s1" in p.stdout.splitlines()


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this host has an NVIDIA driver")
def test_planned_run_on_this_machine_stops_at_the_doctor(tmp_path: Path) -> None:
    """The real planned steps, executed here: the preflight finds no driver, nothing else runs, and the
    report says which step failed and why (it never pretends a GPU result)."""
    cfg = cfg_for(tmp_path, 90)
    report = smoke.Executor(cfg).run(smoke.plan_steps(cfg))
    assert report["failed_step"] == "doctor" and report["reason"].startswith("driver: no NVIDIA driver")
    assert {s["status"] for s in report["steps"][1:]} == {"skipped"}
    assert report["agreement"] == {} and report["throughput"] == {}
    assert not (cfg.out_dir / "fp16").exists()
    assert smoke.report_problems(report) == []


def test_serve_step_refuses_a_busy_port(tiny_demo_repo: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        cfg = cfg_for(tmp_path, 90, http_port=busy)
        serve = Step(
            "fp16/serve",
            "serve",
            "fp16",
            params={
                "repo": str(tiny_demo_repo),
                "image": IMAGE,
                "container": "tritonforge-smoke-busy",
                "http_url": cfg.http_url,
                "ports": [busy, cfg.grpc_port, cfg.metrics_port],
                "log": str(tmp_path / "server.log"),
            },
            timeout_s=30,
        )
        report = smoke.Executor(cfg).run([serve])
    assert report["failed_step"] == "fp16/serve" and f"port {busy} is in use" in report["reason"]
    assert not (tmp_path / "server.log").exists()  # nothing was started


def test_loadtest_step_reads_the_report_the_loadtest_writes(tmp_path: Path) -> None:
    """The loadtest step's handler on a report.json written by the current report code (a stored fixture),
    put in place by a real command standing in for the locust run."""
    fixture = Path(__file__).parent / "fixtures" / "loadtest_reports" / "sweep_repeats_v1.json"
    dest = tmp_path / "load" / "report.json"
    step = Step(
        "fp16/loadtest",
        "loadtest",
        "fp16",
        (
            sys.executable,
            "-c",
            f"import os, shutil; os.makedirs({str(dest.parent)!r}); "
            f"shutil.copy({str(fixture)!r}, {str(dest)!r})",
        ),
        params={"log": str(tmp_path / "loadtest.log"), "report": str(dest)},
    )
    report = smoke.Executor(cfg_for(tmp_path, 90)).run([step])
    assert report["ok"], report["reason"]
    t = report["throughput"]["fp16"]
    src = json.loads(fixture.read_text())
    best = next(lv for lv in src["levels"] if lv["label"] == src["summary"]["best_level"])
    assert t["output_tokens_per_s"] == src["summary"]["output_tokens_per_s"] and t["best_level"] == "c=2"
    assert (
        t["ttft_ms"]["p50"] == best["metrics"]["ttft_ms"]["p50"]
        and t["error_rate"] == best["metrics"]["error_rate"]
    )


@pytest.mark.slow
def test_build_step_without_tensorrt_llm_is_a_failure_not_a_fake(tmp_path: Path) -> None:
    """The real `tritonforge build` of the smoke spec (tiny model, no --docker) on this machine: the
    checkpoint is exported, the engine step is skipped because TensorRT-LLM is not here, and the smoke
    step fails saying so instead of going on without an engine."""
    import yaml

    cfg = cfg_for(tmp_path, 90)
    spec = smoke.smoke_spec(cfg, "fp16")
    spec["tiers"][0]["model"] = "builtin:tiny"
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    build = tmp_path / "build"
    step = Step(
        "fp16/build",
        "command",
        "fp16",
        (sys.executable, "-m", "tritonforge", "build", str(spec_path), "-o", str(build), "--json"),
        params={"log": str(tmp_path / "build.log"), "manifest": str(build / "build_manifest.json")},
        timeout_s=600,
    )
    report = smoke.Executor(cfg).run([step])
    assert report["failed_step"] == "fp16/build"
    assert report["reason"].startswith("no engine was built (engine step skipped: TensorRT-LLM not installed")
    assert (build / "main" / "checkpoint").is_dir()  # the part that can run here did
