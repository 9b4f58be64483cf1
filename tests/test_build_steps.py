"""Build steps: content-addressed skipping, atomic publication, dry run, docker commands, manifest helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tritonforge.builder.build import Executor, build, engine_command
from tritonforge.builder.build_cli import build_command
from tritonforge.builder.engine_facts import deployment_engine_facts
from tritonforge.builder.manifest import SCHEMA, read_manifest, write_manifest
from tritonforge.builder.planner import plan_deployment
from tritonforge.builder.spec import load_spec, parse_spec
from tritonforge.builder.steps import STAMP, HashCache, cached_result, run_step, step_key
from tritonforge.errors import UserError

SPECS = Path(__file__).parent / "fixtures" / "specs"


def write_files(d: Path, n: int = 2) -> dict:
    for i in range(n):
        (d / f"f{i}.bin").write_bytes(bytes([i]) * 1000)
    return {"n": n}


def test_step_runs_once_then_is_cached(tmp_path):
    out = tmp_path / "step"
    calls = []

    def action(tmp: Path) -> dict:
        calls.append(tmp)
        return write_files(tmp)

    key = step_key({"a": 1})
    r1 = run_step("s", "t", key, out, action)
    assert r1.status == "built" and sorted(r1.outputs) == ["f0.bin", "f1.bin"] and (out / STAMP).is_file()
    r2 = run_step("s", "t", key, out, action)
    assert r2.status == "cached" and r2.outputs == r1.outputs and r2.details == {"n": 2} and len(calls) == 1
    # another key -> runs again and replaces the output
    r3 = run_step("s", "t", step_key({"a": 2}), out, lambda tmp: write_files(tmp, 3))
    assert r3.status == "built" and len(r3.outputs) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step"]


def test_interrupted_step_leaves_no_result_that_looks_done(tmp_path):
    out = tmp_path / "step"

    def crash(tmp: Path) -> dict:
        write_files(tmp)
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-way

    with pytest.raises(KeyboardInterrupt):
        run_step("s", "t", "k", out, crash)
    assert list(tmp_path.iterdir()) == []  # no output dir, no temp dir
    # an earlier complete output survives a failed rebuild untouched
    run_step("s", "t", "k1", out, write_files)
    with pytest.raises(KeyboardInterrupt):
        run_step("s", "t", "k2", out, crash)
    assert cached_result("s", "t", "k1", out) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step"]


def test_missing_or_changed_output_is_not_cached(tmp_path):
    out = tmp_path / "step"
    run_step("s", "t", "k", out, write_files)
    (out / "f0.bin").write_bytes(b"truncated")
    assert cached_result("s", "t", "k", out) is None
    assert run_step("s", "t", "k", out, write_files).status == "built"
    (out / "f1.bin").unlink()
    assert cached_result("s", "t", "k", out) is None


def test_failed_action_publishes_nothing(tmp_path):
    r = run_step("s", "t", "k", tmp_path / "step", lambda tmp: {**write_files(tmp), "failed": ["gate"]})
    assert r.status == "failed" and r.reason == "gate" and list(tmp_path.iterdir()) == []


def test_hash_cache_reuses_digests(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 100)
    c = HashCache(tmp_path / "cache.json")
    d = c.file(f)
    c.save()
    c2 = HashCache(tmp_path / "cache.json")
    assert c2.data[str(f.resolve())]["sha256"] == d == c2.file(f)
    f.write_bytes(b"y" * 101)
    assert c2.file(f) != d


def test_dry_run_lists_every_command_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = load_spec(SPECS / "llama31-70b-fp8-draft-h100.yaml")
    rep = build(spec, build_dir=tmp_path / "b", dry_run=True, progress=lambda s: None)
    assert rep.dry_run and not (tmp_path / "b").exists()
    assert [(c["tier"], c["step"]) for c in rep.commands] == [
        ("main", "checkpoint"),
        ("main", "engine"),
        ("main", "draft_checkpoint"),
        ("main", "draft_engine"),
        ("main", "tokenizer"),
    ]
    eng = rep.commands[1]["command"]
    assert eng[0] == "trtllm-build" and eng[eng.index("--max_draft_len") + 1] == "4"
    q = rep.commands[0]
    assert q["job"]["qformat"] == "fp8" and q["job"]["kv_cache_dtype"] == "fp8" and q["job"]["tp"] == 2
    r = CliRunner().invoke(build_command, [str(SPECS / "llama31-8b-fp8-h100.yaml"), "--dry-run", "-o", "b2"])
    assert r.exit_code == 0, r.output
    assert "commands (dry run: nothing is run)" in r.output and "[main/engine] trtllm-build" in r.output
    assert "quantization memory" in r.output  # weights + calibration activations against this host
    assert not (tmp_path / "b2").exists()
    r = CliRunner().invoke(build_command, [str(SPECS / "llama31-8b-fp8-h100.yaml"), "--dry-run", "--json"])
    out = json.loads(r.output)
    assert out["commands"][1]["step"] == "engine"
    assert (
        out["commands"][0]["job"]["calib_size"] == 512
        and out["commands"][0]["job"]["memory"]["weights"] > 15e9
    )
    assert out["quantize_memory"]  # per step figures, or the one-line reason it does not fit this host


def test_build_refuses_invalid_specs_before_doing_anything(tmp_path):
    spec = parse_spec(
        {
            "name": "bad",
            "tiers": [
                {
                    "name": "main",
                    "model": "fixture:llama-3.1-8b",
                    "runtime": "trtllm-engine",
                    "quantization": {"format": "nvfp4"},
                }
            ],
        }
    )
    with pytest.raises(UserError, match="Blackwell"):
        build(spec, build_dir=tmp_path / "b", progress=lambda s: None)
    assert not (tmp_path / "b").exists()


def test_build_needs_the_checkpoint_itself(tmp_path):
    spec = load_spec(SPECS / "llama31-8b-fp8-h100.yaml")  # fixture: config only
    with pytest.raises(UserError, match="a build needs the checkpoint itself"):
        build(spec, build_dir=tmp_path / "b", progress=lambda s: None)
    assert not (tmp_path / "b").exists()


def test_docker_executor_mounts_paths_and_runs_in_the_image(tmp_path):
    plan = plan_deployment(load_spec(SPECS / "llama31-70b-fp8-tp2-h100.yaml"), str(tmp_path / "b"))
    e = plan.tiers[0].engine
    ck, out = tmp_path / "b" / "main" / "checkpoint", tmp_path / "b" / "main" / "engine"
    cmd = engine_command(
        e, ck, out, Executor("docker", "nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3")
    )
    i = cmd.index("nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3")
    assert cmd[:3] == ["docker", "run", "--rm"] and "--gpus" in cmd[:i]
    assert (
        f"{ck.resolve()}:{ck.resolve()}:ro" in cmd[:i]
        and f"{out.parent.resolve()}:{out.parent.resolve()}" in cmd[:i]
    )
    assert cmd[i + 1 :] == engine_command(e, ck, out, Executor())


def test_read_manifest_and_artifacts_without_a_build(tmp_path):
    assert read_manifest(tmp_path) is None
    (tmp_path / "build_manifest.json").write_text("{nope")
    with pytest.raises(UserError, match="not valid JSON"):
        read_manifest(tmp_path)
    write_manifest(tmp_path, {"schema": "other"})
    with pytest.raises(UserError, match="not a tritonforge build manifest"):
        read_manifest(tmp_path)
    spec = load_spec(SPECS / "llama31-70b-fp8-draft-h100.yaml")
    art = deployment_engine_facts(spec, tmp_path / "none")["main"]
    assert (art.max_batch_size, art.max_seq_len, art.max_num_tokens) == (256, 1284, 1280)
    assert art.engine_dir is None and not art.built
    assert (art.kv_cache_free_gpu_mem_fraction, art.draft_kv_cache_free_gpu_mem_fraction) == (0.818, 0.082)
    assert art.enable_kv_cache_reuse and art.max_draft_len == 4
    write_manifest(
        tmp_path / "m",
        {
            "schema": SCHEMA,
            "spec": {"name": spec.name},
            "tiers": {
                "main": {
                    "engine_dir": "/e",
                    "tokenizer_dir": "/t",
                    "draft_engine_dir": "/d",
                    "engine_limits": {
                        "max_batch_size": 256,
                        "max_input_len": 1024,
                        "max_seq_len": 1284,
                        "max_num_tokens": 1280,
                    },
                }
            },
        },
    )
    art = deployment_engine_facts(spec, tmp_path / "m")["main"]
    assert (art.engine_dir, art.tokenizer_dir, art.draft_engine_dir, art.built) == ("/e", "/t", "/d", True)
