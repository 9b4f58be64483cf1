"""Router policies, entry_config parsing and request parsing, without Triton."""

from __future__ import annotations

import numpy as np
import pytest

from tritonforge.model_repo_templates.tf_policy.config import ConfigError, parse_entry_config
from tritonforge.model_repo_templates.tf_policy.params import (
    RequestError,
    exact_key,
    namespace,
    parse_request,
)
from tritonforge.model_repo_templates.tf_policy.router import Router, build_router, estimate_tokens

TIERS = [
    {"name": "small", "model": "small_ensemble", "max_input_len": 256, "max_output_len": 128},
    {"name": "large", "model": "large_ensemble", "max_input_len": 2048, "max_output_len": 1024},
]


def cfg(**router: object):
    return parse_entry_config({"tiers": TIERS, "router": {"enabled": True, **router}})


def req(text: str, max_tokens: int = 16, **kw: object):
    return parse_request(
        {"text_input": np.array([text.encode()], dtype=object), "max_tokens": np.array([max_tokens]), **kw}
    )


def test_heuristic_short_simple_goes_small() -> None:
    r = build_router(cfg())
    d = r.route(req("What is the capital of France?"))
    assert (d.tier, d.policy) == ("small", "heuristic")


@pytest.mark.parametrize(
    "text,max_tokens,why",
    [
        ("Summarize: " + "the quick brown fox jumps over the lazy dog " * 12, 16, "prompt"),
        ("Tell me a story", 500, "max_tokens"),
        ("def add(a, b): return a + b  # fix it", 16, "markers"),
        ("Prove that the square root of two is irrational", 16, "markers"),
        ("Solve x^2 = 4 step by step", 16, "markers"),
    ],
)
def test_heuristic_long_or_complex_goes_large(text: str, max_tokens: int, why: str) -> None:
    d = build_router(cfg()).route(req(text, max_tokens))
    assert d.tier == "large", d.reason
    assert why.split("_")[0] in d.reason


def test_thresholds_come_from_the_spec() -> None:
    text = "one two three four five six seven eight nine ten"
    assert build_router(cfg()).route(req(text)).tier == "small"
    tight = cfg(heuristic={"max_prompt_tokens": 4, "max_requested_tokens": 128, "complex_markers": []})
    assert build_router(tight).route(req(text)).tier == "large"
    no_markers = cfg(heuristic={"complex_markers": []})
    assert build_router(no_markers).route(req("def f(): pass")).tier == "small"


def test_static_and_disabled_router_use_the_default_tier() -> None:
    assert build_router(cfg(policy="static", default_tier="large")).route(req("hi")).tier == "large"
    off = parse_entry_config({"tiers": TIERS, "router": {"enabled": False}})
    assert build_router(off).route(req("prove " * 30, 100)).tier == "small"


def test_forced_tier_wins_and_has_no_fallback() -> None:
    r = build_router(cfg())
    d = r.route(req("prove it step by step", tier=np.array([b"small"], dtype=object)))
    assert (d.tier, d.policy) == ("small", "forced")
    assert r.chain(d) == ["small"]


def test_tier_limits_move_the_request_up() -> None:
    r = build_router(cfg(policy="static"))
    d = r.route(req("hello", max_tokens=200))  # small allows 128 output tokens
    assert d.tier == "large" and "limits" in d.reason


def test_fallback_chain_order() -> None:
    three = parse_entry_config(
        {"tiers": TIERS[:1] + [{"name": "mid", "model": "m"}] + TIERS[1:], "router": {"enabled": True}}
    )
    r = build_router(three)
    d = r.route(req("hi"))
    assert r.chain(d) == ["small", "mid", "large"]
    d.tier = "mid"
    assert r.chain(d) == ["mid", "large", "small"]
    nofb = build_router(parse_entry_config({"tiers": TIERS, "router": {"enabled": True, "fallback": False}}))
    assert nofb.chain(nofb.route(req("hi"))) == ["small"]


def test_token_estimate_and_real_tokenizer(tmp_path) -> None:
    assert 5 <= estimate_tokens("What is the capital of France?") <= 12
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    c = parse_entry_config(
        {"tiers": [{**TIERS[0], "tokenizer_dir": str(tmp_path)}, TIERS[1]], "router": {"enabled": True}}
    )
    r = build_router(c)
    assert r.count.exact and r.count("a a a a") == 4
    missing = Router(c, r.policy, None)  # a tokenizer dir without tokenizer.json: estimate
    assert missing.count("a a") >= 2


def test_request_parsing_and_errors() -> None:
    r = req("hi", stop_words=np.array([[b"x", b"y"]], dtype=object), temperature=np.array([0.5], np.float32))
    assert r.params["stop_words"] == ["x", "y"] and r.params["temperature"] == 0.5
    with pytest.raises(RequestError, match="cache"):
        req("hi", cache=np.array([b"sometimes"], dtype=object))
    with pytest.raises(RequestError, match="max_tokens"):
        parse_request({"text_input": np.array([b"x"], dtype=object)})
    with pytest.raises(RequestError, match=">= 1"):
        req("x", max_tokens=0)
    assert req("x", cache=np.array([b" Refresh "], dtype=object)).cache_mode == "refresh"


def test_sampling_semantics() -> None:
    assert not req("x").sampled()
    assert not req(
        "x", temperature=np.array([0.7], np.float32)
    ).sampled()  # TRT-LLM: greedy without top_k/top_p
    assert req("x", top_k=np.array([5])).sampled()
    assert req("x", top_p=np.array([0.9], np.float32)).sampled()
    assert not req("x", top_k=np.array([1])).sampled()
    assert not req("x", top_k=np.array([5]), temperature=np.array([0.0], np.float32)).sampled()
    assert req("x").sampled(openai=True) and not req("x", temperature=np.array([0.0], np.float32)).sampled(
        openai=True
    )


def test_cache_key_covers_output_affecting_inputs() -> None:
    base = req("Hello  world", 16)
    ns = namespace("small", "v1", base.params)
    # Whitespace and Unicode compatibility forms change what the model sees: never one exact entry.
    for other in (" Hello\tworld ", "Hello\nworld", "Ｈello world", "Hello world\u00a0"):
        assert exact_key(ns, "Hello world") != exact_key(ns, other)
    assert exact_key(ns, "Hello world") == exact_key(ns, "Hello world")
    others = [
        namespace("large", "v1", base.params),
        namespace("small", "v2", base.params),
        namespace("small", "v1", req("x", 17).params),
        namespace("small", "v1", req("x", 16, temperature=np.array([0.3], np.float32)).params),
        namespace("small", "v1", req("x", 16, top_k=np.array([3])).params),
        namespace("small", "v1", req("x", 16, top_p=np.array([0.5], np.float32)).params),
        namespace("small", "v1", req("x", 16, seed=np.array([7], np.uint64)).params),
        namespace("small", "v1", req("x", 16, stop_words=np.array([b"."], dtype=object)).params),
        namespace("small", "v1", req("x", 16, bad_words=np.array([b"."], dtype=object)).params),
        namespace("small", "v1", req("x", 16, min_tokens=np.array([4])).params),
        namespace("small", "v1", req("x", 16, exclude_input_in_output=np.array([False])).params),
    ]
    assert len({ns, *others}) == len(others) + 1
    assert (
        namespace("small", "v1", req("x", 16, stream=np.array([True])).params) == ns
    )  # stream is not output


def test_entry_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="tiers"):
        parse_entry_config({"tiers": []})
    with pytest.raises(ConfigError, match="router.policy"):
        parse_entry_config({"tiers": TIERS, "router": {"policy": "magic"}})
    with pytest.raises(ConfigError, match="small_tier"):
        parse_entry_config({"tiers": TIERS, "router": {"small_tier": "tiny"}})
    with pytest.raises(ConfigError, match="url"):
        parse_entry_config({"tiers": [{"name": "r", "model": "m", "kind": "remote"}]})
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_entry_config("{nope")
    # The spec's router.remote entries are tiers in the entry_config; under `router` they are an unknown key.
    remote = {"name": "big", "kind": "remote", "protocol": "openai", "url": "http://x/v1", "model": "m"}
    with pytest.raises(ConfigError, match=r"router\.remote: unknown key"):
        parse_entry_config({"tiers": TIERS, "router": {"remote": [remote]}})
    c = parse_entry_config({"tiers": [*TIERS, remote]})
    assert c.tier("big").is_remote and c.tier("big").protocol == "openai" and c.large_tier == "big"
