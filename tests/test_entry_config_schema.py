"""The `llm` entry_config has one typed schema (tf_policy/config.py): what emit writes, the model parses back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tritonforge.builder.spec import load_spec
from tritonforge.ensembles.wiring import TierPaths, entry_config, pbtxt_escape, plan_repository
from tritonforge.model_repo_templates.tf_policy.config import (
    CacheConfig,
    ConfigError,
    EntryConfig,
    HeuristicConfig,
    RouterConfig,
    TierConfig,
    parse_entry_config,
)

ROOT = Path(__file__).resolve().parents[1]
ENTRY_SPECS = [p for p in sorted((ROOT / "examples").glob("*.yaml")) if load_spec(p).uses_entry_model]

FULL = EntryConfig(
    tiers=(
        TierConfig(
            name="small",
            model="small_ensemble",
            streaming=False,
            batched=False,
            engine="small_tensorrt_llm",
            max_input_len=1024,
            max_output_len=256,
            tokenizer_dir="/tok",
            version="abc",
            timeout_s=5.5,
        ),
        TierConfig(
            name="cloud",
            model="gpt-x",
            kind="remote",
            protocol="openai",
            url="https://api.example.com/v1",
            api_key_env="OPENAI_API_KEY",
            timeout_s=30.0,
        ),
    ),
    router=RouterConfig(
        enabled=True,
        policy="classifier",
        default_tier="small",
        large_tier="cloud",
        heuristic=HeuristicConfig(max_prompt_tokens=10, complex_markers=("prove",)),
        classifier_path="clf.json",
        fallback=False,
        tier_timeout_s=12.0,
    ),
    cache=CacheConfig(
        enabled=True,
        backend="redis",
        similarity_threshold=0.9,
        ttl_s=60,
        capacity=7,
        hmac_key_env="TF_HMAC",
        redis_timeout_s=1.5,
        semantic_max_tokens=64,
    ),
    classifier_file="router_classifier.json",
    embedding_model_dir="/emb",
    cache_prefix="tf:x:",
)


def test_typed_config_round_trips_through_json() -> None:
    text = FULL.to_json()
    back = parse_entry_config(text)
    assert back == FULL
    assert back.to_json() == text
    assert parse_entry_config(json.loads(text)) == FULL  # the dict form too
    data = json.loads(text)
    # Non-default runtime knobs are written; a local tier's per-tier timeout too.
    assert data["cache"]["redis_timeout_s"] == 1.5 and data["tiers"][0]["timeout_s"] == 5.5
    assert data["router"]["heuristic"]["complex_markers"] == ["prove"]


def test_each_tier_kind_writes_its_own_keys() -> None:
    local, remote = json.loads(FULL.to_json())["tiers"]
    assert "url" not in local and "protocol" not in local and "api_key_env" not in local
    assert "streaming" not in remote and "tokenizer_dir" not in remote and "engine" not in remote
    assert remote["api_key_env"] == "OPENAI_API_KEY" and local["tokenizer_dir"] == "/tok"
    # Knobs left at their defaults stay out, so the emitted JSON holds what emit decided only.
    cache = json.loads(EntryConfig(tiers=(TierConfig("a", "m"),)).to_json())["cache"]
    assert "redis_timeout_s" not in cache and "sync_interval_s" not in cache and "capacity" in cache


@pytest.mark.parametrize("spec_path", ENTRY_SPECS, ids=lambda p: p.stem)
def test_emitted_entry_config_parses_back_to_the_same_bytes(spec_path: Path) -> None:
    spec = load_spec(spec_path)
    paths = {
        t.name: TierPaths(f"/models/{t.name}", f"/tok/{t.name}", f"/draft/{t.name}" if t.draft else None)
        for t in spec.tiers
    }
    plan = plan_repository(spec, paths, "test")
    cfg = entry_config(spec, plan.tiers, paths)
    (llm,) = [m for m in plan.models if m.role == "llm"]
    assert ("entry_config", pbtxt_escape(cfg.to_json())) in llm.values["parameters"]
    back = parse_entry_config(cfg.to_json())
    assert back == cfg and back.to_json() == cfg.to_json()
    assert back.cache_prefix == f"tf:{spec.name}:" and back.tier_names[: len(spec.tiers)] == tuple(
        t.name for t in spec.tiers
    )


BASE = {"tiers": [{"name": "a", "model": "m"}]}


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({**BASE, "tier": []}, "tier"),
        ({"tiers": [{"name": "a", "model": "m", "temperature": 1}]}, "tiers[0].temperature"),
        ({**BASE, "cache": {"ttl": 5}}, "cache.ttl"),
        ({**BASE, "router": {"heuristic": {"max_tokens": 5}}}, "router.heuristic.max_tokens"),
        ({**BASE, "router": {"remote": []}}, "router.remote"),
    ],
)
def test_unknown_key_is_refused_by_name(data: dict, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_entry_config(data)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: unknown key")


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"cache": {}}, "tiers"),
        ({"tiers": [{"name": "a", "model": "m"}, {"name": "b"}]}, "tiers[1].model"),
        ({"tiers": [{"model": "m"}]}, "tiers[0].name"),
    ],
)
def test_missing_required_key_is_named(data: dict, path: str) -> None:
    with pytest.raises(ConfigError, match="required key missing") as info:
        parse_entry_config(data)
    assert info.value.path == path


@pytest.mark.parametrize(
    ("data", "path", "problem"),
    [
        ({**BASE, "cache": {"capacity": "10"}}, "cache.capacity", "expected int, got str"),
        ({**BASE, "cache": {"capacity": True}}, "cache.capacity", "expected int, got bool"),
        ({**BASE, "router": {"fallback": 1}}, "router.fallback", "expected bool, got int"),
        (
            {**BASE, "router": {"heuristic": {"complex_markers": ["a", 3]}}},
            "router.heuristic.complex_markers[1]",
            "str",
        ),
        ({"tiers": {"name": "a"}}, "tiers", "expected a list"),
        ({"tiers": [{"name": "a", "model": "m"}, "b"]}, "tiers[1]", "expected an object"),
        ([1], "entry_config", "expected an object"),
        ({**BASE, "cache": {"capacity": 0}}, "cache.capacity", ">= 1"),
        ({"tiers": [{"name": "a", "model": "m", "kind": "far"}]}, "tiers[0].kind", "local or remote"),
    ],
)
def test_wrong_value_is_named(data: object, path: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as info:
        parse_entry_config(data)  # type: ignore[arg-type]
    assert info.value.path == path


def test_null_means_the_default_and_ints_are_floats() -> None:
    cfg = parse_entry_config(
        {**BASE, "cache": {"ttl_s": 60, "capacity": None}, "router": {"tier_timeout_s": 3}}
    )
    assert cfg.cache.ttl_s == 60 and cfg.cache.capacity == CacheConfig().capacity
    assert cfg.timeout_for("a") == 3.0


def test_the_producer_is_checked_by_the_same_class() -> None:
    # The object emit builds is checked on construction: a bad one never reaches a config.pbtxt.
    with pytest.raises(ConfigError, match="url: a remote tier is called over http"):
        TierConfig("far", "m", kind="remote", url="file:///etc/passwd")
    with pytest.raises(ConfigError, match=r"router\.large_tier: 'big' is not a tier"):
        EntryConfig(tiers=(TierConfig("a", "m"),), router=RouterConfig(large_tier="big"))
