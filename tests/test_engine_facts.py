"""A GPU tier's engine facts (`builder.engine_facts.EngineFacts`) are the one input of its engine parameters.

Each field of the facts is changed alone and the repository re-wired: exactly the parameters that field
stands for change, nothing else in any model. The facts reach the wiring as `emit` built them (the plan joined
with the build manifest), and a manifest's figures win over the plan's.
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES
from tritonforge.builder.engine_facts import (
    EngineFacts,
    deployment_engine_facts,
    engine_facts,
    unplanned_engine_facts,
)
from tritonforge.builder.manifest import SCHEMA, write_manifest
from tritonforge.builder.planner import plan_deployment
from tritonforge.builder.spec import DeploymentSpec, load_spec
from tritonforge.ensembles.render import resolve_tier_paths
from tritonforge.ensembles.wiring import TierPaths, plan_repository

ENGINE = "llama3.1-8b-fp8-h100.yaml"  # one trtllm-engine, no draft
DRAFT = "llama3.1-70b-fp8-tp2-draft-h100.yaml"  # a target and a draft engine on the same GPUs
PYTORCH = "llama3.1-8b-fp8-h100-pytorch.yaml"  # the LLM API, no engine


def _spec_and_facts(example: str) -> tuple[DeploymentSpec, EngineFacts]:
    spec = load_spec(EXAMPLES / example)
    tier = spec.tiers[0]
    return spec, engine_facts(tier, plan_deployment(spec).tier(tier.name))


def _paths(spec: DeploymentSpec, facts: EngineFacts | None) -> dict[str, TierPaths]:
    tier = spec.tiers[0]
    draft = "/engines/main/draft_engine" if tier.draft else None
    return {tier.name: TierPaths("/engines/main/engine", "/engines/main/tokenizer", draft, engine=facts)}


def _observed(spec: DeploymentSpec, facts: EngineFacts | None) -> dict[tuple[str, str], Any]:
    """(model, parameter) -> value over every model of the repository, plus each model's max_batch_size."""
    paths = _paths(spec, facts)
    out: dict[tuple[str, str], Any] = {}
    for m in plan_repository(spec, paths, "test").models:
        out[(m.name, "max_batch_size")] = m.values["max_batch_size"]
        for key, value in m.values.get("parameters", []):
            if key == "llmapi_kwargs":  # the LLM API's arguments: one entry per argument
                for k, v in json.loads(value.replace('\\"', '"').replace("\\\\", "\\")).items():
                    out[(m.name, f"llmapi.{k}")] = json.dumps(v, sort_keys=True)
            else:
                out[(m.name, key)] = value
    return out


def _changed(spec: DeploymentSpec, facts: EngineFacts, **change: Any) -> set[tuple[str, str]]:
    before, after = _observed(spec, facts), _observed(spec, replace(facts, **change))
    assert before.keys() <= after.keys()
    return {k for k in after if before.get(k) != after[k]}


# Directories feed the paths `render` resolves (see test_gpu_paths_conformance), never a parameter here.
DIRS = {"engine_dir": "/x", "checkpoint_dir": "/x", "tokenizer_dir": "/x", "draft_engine_dir": "/x"}


def test_engine_tier_each_fact_changes_exactly_its_parameters() -> None:
    spec, f = _spec_and_facts(ENGINE)
    assert f.max_tokens_in_paged_kv_cache is None and f.kv_pool_tokens and f.draft_kv_pool_tokens is None
    every = {"preprocessing", "tensorrt_llm", "postprocessing", "ensemble"}
    assert _changed(spec, f, max_batch_size=f.max_batch_size + 1) == {(m, "max_batch_size") for m in every}
    assert _changed(spec, f, max_input_len=f.max_input_len - 1) == {
        ("preprocessing", "max_input_len"),
        ("preprocessing", "max_input_bytes"),
    }
    assert _changed(spec, f, max_seq_len=100) == {("preprocessing", "max_output_len")}
    assert _changed(spec, f, kv_cache_free_gpu_mem_fraction=0.5) == {
        ("tensorrt_llm", "kv_cache_free_gpu_mem_fraction")
    }
    assert _changed(spec, f, enable_kv_cache_reuse=not f.enable_kv_cache_reuse) == {
        ("tensorrt_llm", "enable_kv_cache_reuse")
    }
    assert _changed(spec, f, max_tokens_in_paged_kv_cache=4096) == {
        ("tensorrt_llm", "max_tokens_in_paged_kv_cache")
    }
    # Built into the engine, so no parameter: max_num_tokens; the draft's figures without a draft.
    for change in (
        {"max_num_tokens": 7},
        {"kv_pool_tokens": 7},
        {"draft_kv_pool_tokens": 7},
        {"draft_kv_cache_free_gpu_mem_fraction": 0.1},
        *({k: v} for k, v in DIRS.items()),
    ):
        assert _changed(spec, f, **change) == set(), change


def test_draft_tier_pools_fractions_and_max_draft_len_come_from_the_facts() -> None:
    spec, f = _spec_and_facts(DRAFT)
    assert f.kv_pool_tokens and f.draft_kv_pool_tokens and f.draft_kv_cache_free_gpu_mem_fraction
    engines = {
        ("tensorrt_llm", "kv_cache_free_gpu_mem_fraction"),
        ("tensorrt_llm_draft", "kv_cache_free_gpu_mem_fraction"),
    }
    # One combined fraction for both engines (they share GPUs); each pool pinned in tokens.
    assert _changed(spec, f, kv_cache_free_gpu_mem_fraction=0.5) == engines
    assert _changed(spec, f, draft_kv_cache_free_gpu_mem_fraction=0.2) == engines
    assert _changed(spec, f, kv_pool_tokens=f.kv_pool_tokens + 64) == {
        ("tensorrt_llm", "max_tokens_in_paged_kv_cache")
    }
    assert _changed(spec, f, draft_kv_pool_tokens=f.draft_kv_pool_tokens + 64) == {
        ("tensorrt_llm_draft", "max_tokens_in_paged_kv_cache")
    }
    assert _changed(spec, f, max_draft_len=12) == {("tensorrt_llm_bls", "max_draft_len")}
    assert _changed(spec, f, enable_kv_cache_reuse=not f.enable_kv_cache_reuse) == {
        ("tensorrt_llm", "enable_kv_cache_reuse"),
        ("tensorrt_llm_draft", "enable_kv_cache_reuse"),
    }
    assert _changed(spec, f, max_seq_len=f.max_seq_len + 1) == {("tensorrt_llm_bls", "max_seq_len")}
    # A pool the plan could not fit (0 tokens) pins nothing: each engine keeps its own fraction.
    unpinned = _observed(spec, replace(f, draft_kv_pool_tokens=0))
    assert (
        float(unpinned[("tensorrt_llm", "kv_cache_free_gpu_mem_fraction")])
        == f.kv_cache_free_gpu_mem_fraction
    )
    assert (
        float(unpinned[("tensorrt_llm_draft", "kv_cache_free_gpu_mem_fraction")])
        == f.draft_kv_cache_free_gpu_mem_fraction
    )


def test_pytorch_tier_limits_and_fraction_reach_the_llm_api_arguments() -> None:
    spec, f = _spec_and_facts(PYTORCH)
    assert spec.tiers[0].draft is None
    assert _changed(spec, f, max_num_tokens=f.max_num_tokens + 1) == {
        ("tensorrt_llm", "llmapi.max_num_tokens")
    }
    assert _changed(spec, f, kv_cache_free_gpu_mem_fraction=0.5) == {
        ("tensorrt_llm", "llmapi.kv_cache_config")
    }
    assert ("tensorrt_llm", "llmapi.max_batch_size") in _changed(spec, f, max_batch_size=f.max_batch_size + 1)


def _manifest(spec: DeploymentSpec, build_dir: Path, entry: dict) -> None:
    write_manifest(build_dir, {"schema": SCHEMA, "spec": {"name": spec.name}, "tiers": {"main": entry}})


def test_manifest_figures_win_and_reach_the_wiring_as_they_are(tmp_path: Path) -> None:
    spec = load_spec(EXAMPLES / DRAFT)
    planned = deployment_engine_facts(spec, tmp_path / "none")["main"]
    assert planned == engine_facts(spec.tiers[0], plan_deployment(spec).tier("main")) and not planned.built
    dirs = {k: str(tmp_path / k) for k in ("engine_dir", "tokenizer_dir", "draft_engine_dir")}
    for d in dirs.values():
        Path(d).mkdir()
    limits = {
        "max_batch_size": 9,
        "max_input_len": 99,
        "max_seq_len": 999,
        "max_num_tokens": 9999,
        "max_draft_len": 5,
    }
    entry = {
        **dirs,
        "engine_limits": limits,
        "kv_cache_free_gpu_mem_fraction": 0.6,
        "draft_kv_cache_free_gpu_mem_fraction": 0.2,
        "enable_kv_cache_reuse": False,
    }
    _manifest(spec, tmp_path / "b", entry)
    built = deployment_engine_facts(spec, tmp_path / "b")["main"]
    assert built.built and (built.engine_dir, built.draft_engine_dir) == (
        dirs["engine_dir"],
        dirs["draft_engine_dir"],
    )
    assert {k: getattr(built, k) for k in limits} == limits
    assert (built.kv_cache_free_gpu_mem_fraction, built.draft_kv_cache_free_gpu_mem_fraction) == (0.6, 0.2)
    assert built.enable_kv_cache_reuse is False
    # What the manifest does not record (the planned pools) stays the plan's.
    assert (built.kv_pool_tokens, built.draft_kv_pool_tokens) == (
        planned.kv_pool_tokens,
        planned.draft_kv_pool_tokens,
    )
    # render hands the wiring this very object, next to the resolved paths.
    paths = resolve_tier_paths(spec, EXAMPLES, tmp_path / "b")["main"]
    assert paths.engine == built
    assert (paths.model_dir, paths.draft_model_dir) == (dirs["engine_dir"], dirs["draft_engine_dir"])
    # A manifest of another spec is not read.
    write_manifest(
        tmp_path / "other", {"schema": SCHEMA, "spec": {"name": "other"}, "tiers": {"main": entry}}
    )
    assert deployment_engine_facts(spec, tmp_path / "other")["main"] == planned


def test_pytorch_facts_keep_the_tiers_own_max_seq_len(tmp_path: Path) -> None:
    """The LLM API sizes draft tokens itself: neither the plan's target length (+ K) nor a manifest's applies."""
    spec = load_spec(EXAMPLES / "llama3.3-70b-nvfp4-b200-pytorch.yaml")
    tier = spec.tiers[0]
    assert tier.draft is not None
    plan = plan_deployment(spec).tier(tier.name)
    assert plan.engine.engine_max_seq_len > tier.limits.max_seq_len
    _manifest(spec, tmp_path, {"engine_limits": {"max_seq_len": 123456}})
    facts = deployment_engine_facts(spec, tmp_path)[tier.name]
    assert facts.max_seq_len == tier.limits.max_seq_len


@pytest.mark.parametrize("example", [ENGINE, DRAFT, PYTORCH])
def test_unplanned_facts_are_the_specs_figures(example: str) -> None:
    """What a render without a plan (deploy k8s's launch line) wires: the limits as the spec writes them."""
    spec = load_spec(EXAMPLES / example)
    tier = spec.tiers[0]
    f = unplanned_engine_facts(tier)
    lim = tier.limits
    assert (f.max_batch_size, f.max_input_len, f.max_seq_len, f.max_num_tokens) == (
        lim.max_batch_size,
        lim.max_input_len,
        lim.max_seq_len,
        lim.resolved_max_num_tokens,
    )
    assert f.kv_cache_free_gpu_mem_fraction == tier.kv_cache.free_gpu_mem_fraction
    assert f.kv_pool_tokens is None and not f.built
    # A tier without facts is wired from exactly these.
    assert _observed(spec, None) == _observed(spec, f)


def test_tier_paths_hold_paths_and_the_facts_only() -> None:
    assert [f.name for f in fields(TierPaths)] == ["model_dir", "tokenizer_dir", "draft_model_dir", "engine"]
