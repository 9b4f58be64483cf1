"""emit: every example renders, parses as Triton's ModelConfig, validates, and is byte-identical twice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from tests.conftest import EXAMPLES, tiny_variant
from tritonforge.builder.spec import load_spec
from tritonforge.ensembles.render import LOCK_FILE, emit_files, write_repository
from tritonforge.ensembles.validate import validate_repository
from tritonforge.errors import UserError

EXAMPLE_NAMES = sorted(p.name for p in EXAMPLES.glob("*.yaml"))


def _spec_for(name: str, tmp: Path) -> Path:
    text = (EXAMPLES / name).read_text()
    return tiny_variant(name, tmp) if "builtin:demo" in text else EXAMPLES / name


def _emit(spec_path: Path, out: Path) -> dict[str, bytes]:
    files, _ = emit_files(load_spec(spec_path), spec_path.parent)
    write_repository(files, out)
    return files


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_emits_parses_validates(name: str, tmp_path: Path) -> None:
    spec_path = _spec_for(name, tmp_path)
    files = _emit(spec_path, tmp_path / "repo")
    configs = [p for p in files if p.endswith("config.pbtxt")]
    assert len(configs) >= 4
    for rel in configs:
        cfg = mc.ModelConfig()
        text_format.Parse(files[rel].decode(), cfg)  # raises on anything Triton would reject
        assert cfg.name == rel.split("/")[0]
    for rel, data in files.items():
        if rel.endswith((".pbtxt", ".json", ".txt")) or rel.endswith("model.py"):
            text = data.decode()
            for marker in ("${", "{{", "{%"):
                assert marker not in text, f"{rel} has {marker}"
    assert validate_repository(tmp_path / "repo") == []
    # Same spec, byte-identical output.
    again = _emit(spec_path, tmp_path / "repo2")
    assert again == files
    assert sorted(
        p.relative_to(tmp_path / "repo2").as_posix() for p in (tmp_path / "repo2").rglob("*") if p.is_file()
    ) == sorted(files)


def test_single_tier_keeps_conventional_names(tmp_path: Path) -> None:
    files = _emit(EXAMPLES / "llama3.1-8b-fp8-h100.yaml", tmp_path / "repo")
    assert {p.split("/")[0] for p in files if p.endswith("config.pbtxt")} == {
        "preprocessing",
        "tensorrt_llm",
        "postprocessing",
        "ensemble",
    }
    cfg = mc.ModelConfig()
    text_format.Parse(files["tensorrt_llm/config.pbtxt"].decode(), cfg)
    assert (
        cfg.backend == "tensorrtllm" and cfg.max_batch_size == 256 and cfg.model_transaction_policy.decoupled
    )
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["gpt_model_type"] == "inflight_fused_batching"
    assert params["enable_kv_cache_reuse"] == "true" and params["kv_cache_free_gpu_mem_fraction"] == "0.9"
    assert params["exclude_input_in_output"] == "true"


def test_cpu_engine_has_same_tensors_as_gpu_engine(tmp_path: Path) -> None:
    cpu = _emit(tiny_variant("cpu-demo.yaml", tmp_path), tmp_path / "cpu")
    gpu = _emit(EXAMPLES / "llama3.1-8b-fp8-h100.yaml", tmp_path / "gpu")
    a, b = mc.ModelConfig(), mc.ModelConfig()
    text_format.Parse(cpu["tensorrt_llm/config.pbtxt"].decode(), a)
    text_format.Parse(gpu["tensorrt_llm/config.pbtxt"].decode(), b)
    assert a.backend == "python" and b.backend == "tensorrtllm"
    assert [(t.name, t.data_type, list(t.dims)) for t in a.input] == [
        (t.name, t.data_type, list(t.dims)) for t in b.input
    ]
    gpu_outputs = {(t.name, t.data_type) for t in b.output}
    assert gpu_outputs <= {(t.name, t.data_type) for t in a.output}
    for model in ("preprocessing", "postprocessing", "ensemble"):
        assert cpu[f"{model}/config.pbtxt"].split(b"\n", 1)[1].replace(b"cpu-demo", b"X").count(b"\n") > 5
    assert "tensorrt_llm/1/tf_runtime/engine.py" in cpu or "tensorrt_llm/1/tf_runtime/__init__.py" in cpu
    assert (tmp_path / "cpu" / LOCK_FILE).is_file() and (tmp_path / "cpu" / "requirements.txt").is_file()


def test_emit_refuses_foreign_nonempty_dir(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    files, _ = emit_files(load_spec(EXAMPLES / "llama3.1-8b-fp8-h100.yaml"), EXAMPLES)
    for force in (False, True):  # --force replaces only our own repository, never a foreign directory
        with pytest.raises(UserError, match="not written by tritonforge"):
            write_repository(files, out, force=force)
        assert [p.name for p in out.iterdir()] == ["precious.txt"] and (
            out / "precious.txt"
        ).read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    write_repository(files, empty)
    write_repository(files, empty)  # our own output may be replaced without --force
    assert (empty / LOCK_FILE).is_file()


def test_interrupted_emit_leaves_previous_result(tmp_path: Path) -> None:
    """A failure while writing leaves the previous repository intact and no temp dir behind."""
    out = tmp_path / "repo"
    files, _ = emit_files(load_spec(EXAMPLES / "llama3.1-8b-fp8-h100.yaml"), EXAMPLES)
    write_repository(files, out)
    before = sorted(p.name for p in out.iterdir())
    broken = dict(files)
    broken["ensemble/config.pbtxt/oops"] = b"x"  # cannot be written: a file is in the way
    with pytest.raises(OSError):
        write_repository(broken, out)
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]


def test_emit_cli_one_line_errors(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\ntiers:\n  - {name: main, model: ./no-such-checkpoint, runtime: cpu-reference}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tritonforge", "emit", str(spec), "-o", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "tiers.main.model" in proc.stderr and "config.json" in proc.stderr
    assert not (tmp_path / "r").exists()
