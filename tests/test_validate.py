"""validate: broken repositories are caught before a server starts, each with model, field and fix."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tritonforge.builder.spec import load_spec
from tritonforge.ensembles.render import emit_files, write_repository
from tritonforge.ensembles.validate import validate_repository


@pytest.fixture(scope="module")
def good_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("good") / "repo"
    files, _ = emit_files(load_spec(EXAMPLES / "llama3.1-8b-fp8-h100.yaml"), EXAMPLES)
    write_repository(files, out)
    return out


def _edit(repo: Path, model: str, fn: Callable[[str], str]) -> None:
    p = repo / model / "config.pbtxt"
    p.write_text(fn(p.read_text()))


def _engine_dir_with_batch(repo: Path, batch: int) -> None:
    eng = repo.parent / "engine"
    eng.mkdir(exist_ok=True)
    (eng / "config.json").write_text(
        json.dumps({"version": "0.16.0", "build_config": {"max_batch_size": batch}})
    )
    _edit(
        repo,
        "tensorrt_llm",
        lambda t: re.sub(r'(key: "gpt_model_path"\s+value: \{\s+string_value: ")[^"]*', rf"\g<1>{eng}", t),
    )


def _second_engine(repo: Path) -> None:
    shutil.copytree(repo / "tensorrt_llm", repo / "tensorrt_llm_draft")
    _edit(
        repo,
        "tensorrt_llm_draft",
        lambda t: t.replace('name: "tensorrt_llm"', 'name: "tensorrt_llm_draft"').replace(
            'string_value: "0.9"', 'string_value: "0.5"'
        ),
    )


BROKEN: list[tuple[str, Callable[[Path], None], str, str]] = [
    (
        "placeholder",
        lambda r: _edit(r, "tensorrt_llm", lambda t: t.replace("/engines/main/engine", "${engine_dir}")),
        "tensorrt_llm",
        "unfilled placeholder ${engine_dir}",
    ),
    (
        "syntax",
        lambda r: _edit(r, "preprocessing", lambda t: t.replace("max_batch_size:", "max_batch_sise:")),
        "preprocessing",
        "does not parse as ModelConfig",
    ),
    (
        "missing step model",
        lambda r: shutil.rmtree(r / "postprocessing"),
        "ensemble",
        "'postprocessing' is not in the repository",
    ),
    (
        "type mismatch",
        lambda r: _edit(
            r,
            "preprocessing",
            lambda t: t.replace(
                'name: "INPUT_ID"\n    data_type: TYPE_INT32', 'name: "INPUT_ID"\n    data_type: TYPE_INT64'
            ),
        ),
        "ensemble",
        "type mismatch",
    ),
    (
        "streaming without decoupled",
        lambda r: _edit(r, "tensorrt_llm", lambda t: t.replace("decoupled: true", "decoupled: false")),
        "tensorrt_llm",
        "not decoupled",
    ),
    (
        "engine batch mismatch",
        lambda r: _engine_dir_with_batch(r, 64),
        "tensorrt_llm",
        "max_batch_size 256 != engine max_batch_size 64",
    ),
    ("two engines overcommit", _second_engine, "tensorrt_llm", "sum to at most 0.95"),
    # KIND_GPU: one executor per visible GPU (tensorrtllm_backend docs/model_config.md places engines with
    # gpu_device_ids: "if not provided, the model will use all visible GPUs").
    (
        "engine on KIND_GPU",
        lambda r: _edit(r, "tensorrt_llm", lambda t: t.replace("kind: KIND_CPU", "kind: KIND_GPU")),
        "tensorrt_llm",
        "KIND_GPU starts one executor per visible GPU",
    ),
    (
        "python model without model.py",
        lambda r: (r / "postprocessing" / "1" / "model.py").unlink(),
        "postprocessing",
        "no model.py",
    ),
    (
        "unmapped required input",
        lambda r: _edit(r, "ensemble", lambda t: t.replace('key: "input_lengths"', 'key: "input_lengths_x"')),
        "ensemble",
        "no input 'input_lengths_x'",
    ),
]


@pytest.mark.parametrize(("label", "breaker", "model", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_repository(
    label: str, breaker: Callable[[Path], None], model: str, expected: str, good_repo: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(good_repo, repo)
    assert validate_repository(repo) == []
    breaker(repo)
    problems = validate_repository(repo)
    assert problems, label
    text = [str(p) for p in problems]
    assert any(expected in t for t in text), text
    assert any(p.model.startswith(model) for p in problems), text
    assert all(p.fix for p in problems)


def test_validate_cli(good_repo: Path, tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "tritonforge", "validate", str(good_repo)], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "ok" in ok.stdout
    repo = tmp_path / "repo"
    shutil.copytree(good_repo, repo)
    shutil.rmtree(repo / "preprocessing")
    bad = subprocess.run(
        [sys.executable, "-m", "tritonforge", "validate", str(repo), "--json"], capture_output=True, text=True
    )
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert not report["ok"] and any("preprocessing" in p for p in report["problems"])


# --- models that call themselves ----------------------------------------------------------------------
def _emit_example(example: str, out: Path) -> Path:
    files, _ = emit_files(load_spec(EXAMPLES / example), EXAMPLES)
    write_repository(files, out)
    return out


def _entry_tiers_to(repo: Path, target: str) -> None:
    """Point every local tier of the `llm` entry's entry_config at `target`."""
    from google.protobuf import text_format

    from tritonforge.ensembles.triton_schema import model_config_pb2 as mc

    path = repo / "llm" / "config.pbtxt"
    cfg = mc.ModelConfig()
    text_format.Parse(path.read_text(), cfg)
    entry = json.loads(cfg.parameters["entry_config"].string_value)
    for tier in entry["tiers"]:
        if tier["kind"] == "local":
            tier["model"] = target
    cfg.parameters["entry_config"].string_value = json.dumps(entry)
    path.write_text(text_format.MessageToString(cfg))


SELF_TARGETS: list[tuple[str, str, Callable[[Path], None], str, str]] = [
    (
        "entry tiers call the entry",
        "cascade-h100.yaml",
        lambda r: _entry_tiers_to(r, "llm"),
        "llm",
        "calls 'llm', the model itself",
    ),
    (
        "ensemble step names the ensemble",
        "llama3.1-8b-fp8-h100.yaml",
        lambda r: _edit(
            r, "ensemble", lambda t: t.replace('model_name: "postprocessing"', 'model_name: "ensemble"')
        ),
        "ensemble",
        "calls 'ensemble', the model itself",
    ),
    (
        "BLS target is the BLS",
        "llama3.1-70b-fp8-tp2-draft-h100.yaml",
        lambda r: _edit(
            r,
            "tensorrt_llm_bls",
            lambda t: re.sub(
                r'(key: "target_model"\s+value: \{\s+string_value: ")[^"]*', r"\g<1>tensorrt_llm_bls", t
            ),
        ),
        "tensorrt_llm_bls",
        "calls 'tensorrt_llm_bls', the model itself",
    ),
    (
        "BLS and ensemble call each other",
        "llama3.1-70b-fp8-tp2-draft-h100.yaml",
        lambda r: (
            _edit(
                r,
                "ensemble",
                lambda t: t.replace('model_name: "postprocessing"', 'model_name: "tensorrt_llm_bls"'),
            ),
            _edit(
                r,
                "tensorrt_llm_bls",
                lambda t: re.sub(
                    r'(key: "target_model"\s+value: \{\s+string_value: ")[^"]*', r"\g<1>ensemble", t
                ),
            ),
        ),
        "",
        "call each other in a loop",
    ),
]


@pytest.mark.parametrize(
    ("label", "example", "breaker", "model", "expected"), SELF_TARGETS, ids=[s[0] for s in SELF_TARGETS]
)
def test_model_calling_itself(
    label: str, example: str, breaker: Callable[[Path], None], model: str, expected: str, tmp_path: Path
) -> None:
    repo = _emit_example(example, tmp_path / "repo")
    assert validate_repository(repo) == []
    breaker(repo)
    problems = [p for p in validate_repository(repo) if expected in str(p)]
    assert problems, [str(p) for p in validate_repository(repo)]
    assert all(p.model.startswith(model) and p.fix for p in problems)
    proc = subprocess.run(
        [sys.executable, "-m", "tritonforge", "validate", str(repo)], capture_output=True, text=True
    )
    assert proc.returncode == 1 and expected in proc.stderr


def test_empty_gpt_model_path_is_optional_in_python_models(tmp_path: Path) -> None:
    """The TensorRT-LLM backend's own preprocessing model carries `gpt_model_path` (its `engine_dir`, read only
    for multimodal models, https://github.com/triton-inference-server/tensorrtllm_backend docs/model_config.md)
    and leaves it empty otherwise; only the `tensorrtllm` backend needs it."""
    for backend, expect_problem in (("python", False), ("tensorrtllm", True)):
        repo = tmp_path / backend
        (repo / "m" / "1").mkdir(parents=True)
        (repo / "m" / "1" / "model.py").write_text("")
        (repo / "m" / "config.pbtxt").write_text(
            f'name: "m"\nbackend: "{backend}"\nmax_batch_size: 8\n'
            'parameters { key: "gpt_model_path" value: { string_value: "" } }\n'
        )
        problems = [str(p) for p in validate_repository(repo)]
        assert any("gpt_model_path: empty" in p for p in problems) == expect_problem, problems
