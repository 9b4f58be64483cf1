"""GPU repositories: engine and tokenizer paths, what `serve` refuses, what the container mounts, its image.

Parameter semantics, from https://github.com/triton-inference-server/tensorrtllm_backend docs/model_config.md:
`engine_dir` is "the path to the engine for the model" (the `tensorrt_llm` config's `gpt_model_path`) and
`tokenizer_dir` "the path to the tokenizer for the model" (preprocessing, postprocessing, tensorrt_llm_bls).
Both are read by the server process, so inside the container they must name directories that are mounted.
No GPU runs here: the commands are checked argument by argument, and nothing is started.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLES
from tests.helpers.builds import fake_build
from tritonforge.builder.spec import load_spec
from tritonforge.ensembles.dockerfile import PINNED
from tritonforge.ensembles.render import LOCK_FILE, emit_files, write_repository
from tritonforge.ensembles.server import Ports, check_servable, docker_command, plan_mounts, repository_mounts
from tritonforge.errors import UserError

IMAGE = "nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3"
GPU_EXAMPLES = [
    "llama3.1-8b-fp8-h100.yaml",
    "llama3.1-70b-fp8-tp2-draft-h100.yaml",
    "cascade-h100.yaml",
    "llama3.3-70b-nvfp4-b200.yaml",
]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tritonforge", *args], capture_output=True, text=True, timeout=60
    )


def _emit(example: str, out: Path, build_dir: Path | None = None) -> Path:
    files, _ = emit_files(load_spec(EXAMPLES / example), EXAMPLES, build_dir)
    write_repository(files, out)
    return out


def _volumes(cmd: list[str]) -> list[tuple[str, str, str]]:
    """(host, container, mode) of every `-v` of a docker command."""
    out = []
    for i, arg in enumerate(cmd):
        if arg == "-v":
            host, container, *mode = cmd[i + 1].split(":")
            out.append((host, container, mode[0] if mode else "rw"))
    return out


def _assert_no_collisions(cmd: list[str]) -> None:
    targets = [Path(c) for _, c, _ in _volumes(cmd)]
    assert len(targets) == len(set(targets)), f"duplicate -v targets: {targets}"
    for a in targets:
        for b in targets:
            assert a == b or a not in b.parents, f"-v target {b} is inside -v target {a}"
    assert all(mode == "ro" for _, _, mode in _volumes(cmd)), _volumes(cmd)


@pytest.mark.parametrize("example", GPU_EXAMPLES)
def test_unbuilt_repository_marks_placeholders_and_serve_refuses(example: str, tmp_path: Path) -> None:
    repo = _emit(example, tmp_path / "repo")
    lock = json.loads((repo / LOCK_FILE).read_text())
    spec = load_spec(EXAMPLES / example)
    for t in spec.tiers:
        entry = lock["paths"][t.name]
        assert (
            entry["engine_dir"]["source"] == "placeholder"
            and entry["tokenizer_dir"]["source"] == "placeholder"
        )
        # The tokenizer is no longer the checkpoint path, which sat under the container's /models mount.
        assert not entry["tokenizer_dir"]["path"].startswith("/models")
    with pytest.raises(
        UserError, match=r"never built .*tritonforge build SPEC -o build/.* --build-dir build/"
    ):
        check_servable(repo)
    for args in (["--docker", IMAGE, "--print"], ["--docker", IMAGE, "--no-build", "--print"], []):
        proc = _cli("serve", str(repo), *args)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, (
            proc.stderr
        )
        assert f"tritonforge build SPEC -o build/{spec.name}" in proc.stderr
        assert f"tritonforge emit SPEC -o {repo} --build-dir build/{spec.name}" in proc.stderr
        assert proc.stdout == ""


def test_hand_written_engine_path_missing_is_refused(tmp_path: Path) -> None:
    """Without a lock file the configs alone decide: an engine directory that is not on this host."""
    repo = _emit("llama3.1-8b-fp8-h100.yaml", tmp_path / "repo")
    (repo / LOCK_FILE).unlink()
    with pytest.raises(
        UserError, match=r"tensorrt_llm: gpt_model_path '/engines/main/engine' does not exist"
    ):
        check_servable(repo)


@pytest.mark.parametrize("example", GPU_EXAMPLES)
def test_built_repository_serves_with_distinct_read_only_mounts(example: str, tmp_path: Path) -> None:
    build_dir = fake_build(example, tmp_path)
    repo = _emit(example, tmp_path / "repo", build_dir)
    lock = json.loads((repo / LOCK_FILE).read_text())
    assert {e["engine_dir"]["source"] for e in lock["paths"].values()} == {"build"}
    check_servable(repo)
    cmd = docker_command(IMAGE, repo, Ports(), mounts=repository_mounts(repo))
    _assert_no_collisions(cmd)
    vols = {c: h for h, c, _ in _volumes(cmd)}
    assert vols["/models"] == str(repo.resolve())
    configs = "".join(p.read_text() for p in repo.glob("*/config.pbtxt"))
    for t in load_spec(EXAMPLES / example).tiers:
        for sub in ("engine", "tokenizer", *(("draft_engine",) if t.draft else ())):
            path = str((build_dir / t.name / sub).resolve())
            assert f'string_value: "{path}"' in configs
            assert vols[path] == path  # mounted once, at the path the config names


def test_tokenizer_under_models_moves_the_repository_mount(tmp_path: Path) -> None:
    """A tokenizer directory at /models/... (the spec examples keep checkpoints there) would be hidden by,
    or collide with, the repository's /models mount: the repository then goes elsewhere."""
    repo_at, kept = plan_mounts(["/models/Llama-3.1-8B/tokenizer", "/data/engines/main/engine"])
    assert repo_at != "/models" and not repo_at.startswith("/models/")
    assert kept == ["/data/engines/main/engine", "/models/Llama-3.1-8B/tokenizer"]
    build_dir = fake_build("llama3.1-8b-fp8-h100.yaml", tmp_path)
    repo = _emit("llama3.1-8b-fp8-h100.yaml", tmp_path / "repo", build_dir)
    cmd = docker_command(IMAGE, repo, Ports(), mounts=[*repository_mounts(repo), "/models/x/tokenizer"])
    _assert_no_collisions(cmd)
    at = {c for h, c, _ in _volumes(cmd) if h == str(repo.resolve())}
    assert at == {repo_at}
    assert f"--model-repository={repo_at}" in cmd and "--model-repository=/models" not in cmd


def test_mounts_deduplicated_and_nested_dropped() -> None:
    repo_at, kept = plan_mounts(["/data/b/engine", "/data/b", "/data/b/", "/data/c/tok", "/data/b/engine"])
    assert repo_at == "/models" and kept == ["/data/b", "/data/c/tok"]
    for bad in ("/", "/usr", "/opt", "/opt/tritonserver/x/..", "/tmp"):
        with pytest.raises(UserError, match="hide the image's"):
            plan_mounts([bad])


@pytest.mark.parametrize("example", ["cascade-h100.yaml", "cascade-cpu.yaml", "llama3.1-8b-fp8-h100.yaml"])
def test_repository_dockerfile_adds_what_models_import(example: str, tmp_path: Path) -> None:
    """The NGC trtllm image has TensorRT-LLM's dependencies (numpy, torch, transformers, tokenizers,
    safetensors; https://github.com/NVIDIA/TensorRT-LLM requirements.txt), not redis, hnswlib,
    sentence-transformers or the embedding model: the repository's Dockerfile adds exactly those."""
    repo = _emit(example, tmp_path / "repo")
    req = (repo / "requirements.txt").read_text()
    dockerfile = (repo / "Dockerfile").read_text()
    assert "the NGC trtllm container has them" not in req and "does not" not in req.splitlines()[0]
    assert "not redis, hnswlib, sentence-transformers or the" in req
    spec = load_spec(EXAMPLES / example)
    assert f"FROM {spec.triton.image} AS serve" in dockerfile
    needed = {ln.split("<")[0].strip() for ln in req.splitlines() if ln and not ln.startswith("#")}
    for name, version in PINNED.items():
        assert (f"{name}=={version}" in dockerfile) == (name in needed), name
    lock = json.loads((repo / LOCK_FILE).read_text())
    assert "Dockerfile" in lock["files"]


def test_serve_docker_print_builds_then_runs_the_tag(tmp_path: Path) -> None:
    example = "cascade-h100.yaml"
    spec = load_spec(EXAMPLES / example)
    repo = _emit(example, tmp_path / "repo", fake_build(example, tmp_path))
    image = spec.triton.image
    proc = _cli("serve", str(repo), "--docker", image, "--print")
    assert proc.returncode == 0, proc.stderr
    build, run = [shlex.split(ln) for ln in proc.stdout.strip().splitlines()]
    tag = f"tritonforge/{spec.name}:{spec.spec_hash()[:12]}"
    assert build == ["docker", "build", "--target", "serve", "-t", tag, str(repo.resolve())]
    assert run[:2] == ["docker", "run"] and tag in run and image not in run
    _assert_no_collisions(run)
    # Secrets reach the container by name only (cascade-h100 signs its cache with TRITONFORGE_CACHE_KEY).
    i = run.index("TRITONFORGE_CACHE_KEY")
    assert run[i - 1] == "-e" and not any("TRITONFORGE_CACHE_KEY=" in a for a in run)
    # --no-build: the image as given, one command.
    proc = _cli("serve", str(repo), "--docker", image, "--no-build", "--print")
    assert proc.returncode == 0, proc.stderr
    (only,) = [shlex.split(ln) for ln in proc.stdout.strip().splitlines()]
    assert only[:2] == ["docker", "run"] and image in only and tag not in only
    # Another base than the Dockerfile's: refused in one line, naming both fixes.
    other = next(i for i in (IMAGE, "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3") if i != image)
    proc = _cli("serve", str(repo), "--docker", other, "--print")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--no-build" in proc.stderr
    assert f"builds on {image}" in proc.stderr


def test_spec_engine_and_tokenizer_dirs_resolve_against_the_spec(tmp_path: Path) -> None:
    data = yaml.safe_load((EXAMPLES / "llama3.1-8b-fp8-h100.yaml").read_text())
    data["tiers"][0]["engine_dir"] = "engines/main"
    data["tiers"][0]["tokenizer"] = "tok"
    (tmp_path / "engines" / "main").mkdir(parents=True)
    (tmp_path / "tok").mkdir()
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    files, _ = emit_files(load_spec(spec_path), tmp_path)
    write_repository(files, tmp_path / "repo")
    lock = json.loads((tmp_path / "repo" / LOCK_FILE).read_text())
    assert lock["paths"]["main"]["engine_dir"] == {
        "path": str(tmp_path / "engines" / "main"),
        "source": "spec",
    }
    assert lock["paths"]["main"]["tokenizer_dir"] == {"path": str(tmp_path / "tok"), "source": "spec"}
    check_servable(tmp_path / "repo")


def test_emit_without_build_says_serve_will_refuse(tmp_path: Path) -> None:
    spec_path = EXAMPLES / "llama3.1-8b-fp8-h100.yaml"
    proc = _cli(
        "emit",
        str(spec_path),
        "-o",
        str(tmp_path / "repo"),
        "--build-dir",
        str(fake_build("llama3.1-8b-fp8-h100.yaml", tmp_path)),
    )
    assert proc.returncode == 0 and "note:" not in proc.stderr, proc.stderr
    proc = _cli("emit", str(spec_path), "-o", str(tmp_path / "unbuilt"))
    assert proc.returncode == 0, proc.stderr
    assert (
        "no engines built for tier(s) main" in proc.stderr
        and f"tritonforge build {spec_path} -o build/" in proc.stderr
    )


def test_cpu_repository_from_another_host_says_re_emit(tmp_path: Path) -> None:
    """A CPU repository names checkpoints of the host that emitted it: moved elsewhere, serve names re-emitting."""
    from tests.conftest import tiny_variant

    spec_path = tiny_variant("cpu-demo.yaml", tmp_path)
    files, _ = emit_files(load_spec(spec_path), spec_path.parent)
    repo = tmp_path / "repo"
    write_repository(files, repo)
    check_servable(repo)
    cfg = repo / "preprocessing" / "config.pbtxt"
    text = cfg.read_text()
    tok = text.split('key: "tokenizer_dir"')[1].split('string_value: "')[1].split('"')[0]
    cfg.write_text(text.replace(tok, str(tmp_path / "elsewhere")))
    with pytest.raises(UserError, match=r"does not exist on this host.*re-run `tritonforge emit SPEC -o "):
        check_servable(repo)
