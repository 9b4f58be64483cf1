"""The per-deployment Dockerfile: the NGC trtllm image plus exactly what the repository's Python models import."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tritonforge.builder.spec import load_spec
from tritonforge.ensembles import dockerfile as df
from tritonforge.ensembles.k8s import requirements_of
from tritonforge.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _installed(text: str) -> list[str]:
    """The name==version arguments of the serve stage's pip install."""
    serve = text.split("FROM serve AS tools")[0]
    return sorted(re.findall(r"([a-z0-9-]+==[0-9][^\s\\]*)", serve))


def _requirements(example: str) -> str:
    return "".join(f"{r}\n" for r in requirements_of(load_spec(EXAMPLES / example)))


def test_pins_equal_the_lock_file() -> None:
    """The versions the image installs are the ones the test suite runs (requirements-lock.txt)."""
    lock = {}
    for line in (ROOT / "requirements-lock.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            lock[df.canonical(name)] = version.strip()
    for name, version in df.PINNED.items():
        assert lock.get(name) == version, f"{name}: Dockerfile pins {version}, lock file has {lock.get(name)}"


def test_cascade_with_redis_and_semantic_cache_adds_exactly_the_cache_packages() -> None:
    text = df.render_dockerfile(
        _requirements("cascade-h100.yaml"), "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"
    )
    assert text.splitlines()[3] == "FROM nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3 AS serve"
    assert _installed(text) == sorted(f"{n}=={v}" for n, v in df.PINNED.items())
    # Never reinstalled over the image's CUDA build of torch and TensorRT-LLM's pinned transformers.
    for kept in ("torch", "transformers", "numpy", "tokenizers"):
        assert not re.search(rf"(?<![\w-]){kept}==", text)
    assert "-c /opt/tritonforge/image-constraints.txt" in text


def test_single_tier_gpu_repository_adds_nothing() -> None:
    """A plain TensorRT-LLM repository imports only what the NGC image has."""
    reqs = _requirements("llama3.1-8b-fp8-h100.yaml")
    assert set(df.parse_requirements(reqs)) <= df.IN_BASE_IMAGE
    text = df.render_dockerfile(reqs)
    assert _installed(text) == []
    assert "Nothing to add" in text
    assert f"FROM {df.DEFAULT_BASE_IMAGE} AS serve" in text


def test_memory_cache_without_semantic_adds_no_redis(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\ntiers: [{name: a, model: 'builtin:demo'}]\n"
        "cache: {enabled: true, backend: memory, semantic: false}\n"
    )
    reqs = "".join(f"{r}\n" for r in requirements_of(load_spec(spec)))
    assert _installed(df.render_dockerfile(reqs)) == []
    spec.write_text(
        "name: s\ntiers: [{name: a, model: 'builtin:demo'}]\n"
        "cache: {enabled: true, backend: redis, semantic: false}\n"
    )
    reqs = "".join(f"{r}\n" for r in requirements_of(load_spec(spec)))
    assert _installed(df.render_dockerfile(reqs)) == [f"redis=={df.PINNED['redis']}"]


def test_parse_requirements_reads_emit_output() -> None:
    text = "# header\nnumpy<2\nRedis\nsentence_transformers\n\n"
    assert df.parse_requirements(text) == ["numpy", "redis", "sentence-transformers"]


def test_unknown_or_malformed_requirement_is_one_line() -> None:
    with pytest.raises(UserError, match="no tested version"):
        df.render_dockerfile("leftpad\n")
    with pytest.raises(UserError, match="line 2"):
        df.parse_requirements("redis\n--index-url http://x\n")


def test_corrected_requirements_header_names_what_the_image_lacks() -> None:
    header = df.REQUIREMENTS_HEADER
    assert all(line.startswith("# ") for line in header.splitlines())
    for missing in ("redis", "hnswlib", "sentence-transformers"):
        assert missing in header and missing not in df.IN_BASE_IMAGE
