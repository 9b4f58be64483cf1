"""Shared fixtures: a per-session model cache, tiny specs, and a real Triton serving a tiny repository."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session", autouse=True)
def tf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the whole run (CI sets TRITONFORGE_CACHE; else a temp dir)."""
    path = Path(os.environ.get("TRITONFORGE_CACHE") or tmp_path_factory.mktemp("tf-cache"))
    os.environ["TRITONFORGE_CACHE"] = str(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    _static_table(path)
    return path


def _static_table(cache: Path) -> None:
    """The semantic cache's static token table, distilled once per cache directory before any server starts:
    an `llm` model with the cache's gate would distill it while loading (about a minute of one core on a cold
    cache), which can outlast a test's readiness timeout."""
    try:
        from tritonforge.model_repo_templates.tf_policy.embedding import (
            BUILTIN,
            distill_static,
            resolve_model_dir,
            static_path,
        )

        model_dir = resolve_model_dir(BUILTIN)
    except Exception:  # noqa: BLE001 - no packaged MiniLM: the tests that need it skip or say so
        return
    if not static_path(model_dir, cache).exists():
        distill_static(model_dir, root=cache)


def tiny_variant(example: str, out_dir: Path, **tier_overrides: object) -> Path:
    """A copy of an example spec with builtin:demo* replaced by the fast untrained tiny models."""
    data = yaml.safe_load((EXAMPLES / example).read_text())
    for tier in data["tiers"]:
        tier["model"] = tier["model"].replace("builtin:demo", "builtin:tiny")
        if tier.get("draft"):
            tier["draft"]["model"] = tier["draft"]["model"].replace("builtin:demo", "builtin:tiny")
        tier.update(tier_overrides)
    path = out_dir / f"tiny-{example}"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def tiny_demo_repo(tmp_path_factory: pytest.TempPathFactory, tf_cache: Path) -> Path:
    """examples/cpu-demo.yaml on the tiny model, emitted once per session."""
    from tritonforge.builder.spec import load_spec
    from tritonforge.ensembles.render import emit_files, write_repository

    d = tmp_path_factory.mktemp("tiny-demo")
    spec_path = tiny_variant("cpu-demo.yaml", d)
    files, _ = emit_files(load_spec(spec_path), spec_path.parent)
    write_repository(files, d / "repo")
    return d / "repo"


@pytest.fixture(scope="module")
def tiny_demo_server(tiny_demo_repo: Path) -> Iterator[object]:
    """A real Triton serving the tiny demo repository on free ports, one per test module: a model stub that
    dies in one module (seen once on a loaded machine, not reproduced) cannot fail every later module."""
    from tritonforge.ensembles.server import TritonServer, free_ports

    with TritonServer(
        tiny_demo_repo, free_ports(), log_path=tiny_demo_repo.parent / "triton.log"
    ) as server:  # stops the server whatever happens
        server.wait_ready(180)
        yield server
