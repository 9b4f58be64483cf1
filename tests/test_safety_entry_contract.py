"""The `llm` entry and the full client contract: every output-affecting input is in the exact cache key,
requests for outputs the cache does not hold bypass it, and remote tiers refuse what they cannot carry."""

from __future__ import annotations

import numpy as np
import pytest

from tritonforge.ensembles import contract as c
from tritonforge.model_repo_templates.tf_policy.cache import ResponseCache
from tritonforge.model_repo_templates.tf_policy.config import CacheConfig, TierConfig
from tritonforge.model_repo_templates.tf_policy.memory_backend import MemoryBackend
from tritonforge.model_repo_templates.tf_policy.params import NOT_KEYED, exact_key, namespace, parse_request
from tritonforge.model_repo_templates.tf_policy.service import remote_refusal

NUMPY = {
    c.INT32: np.int32,
    c.INT64: np.int64,
    c.UINT64: np.uint64,
    c.FP32: np.float32,
    c.FP16: np.float16,
    c.BOOL: np.bool_,
    c.STRING: np.object_,
}


def base() -> dict:
    return {
        "text_input": np.array([b"hello there"], dtype=object),
        "max_tokens": np.array([8], dtype=np.int32),
    }


def sample(t: c.Tensor) -> np.ndarray:
    """A value of contract tensor `t`, shaped as its dims say (-1 -> 2)."""
    shape = tuple(2 if d < 0 else d for d in t.dims)
    if t.data_type == c.STRING:
        return np.full(shape, b"xyz", dtype=object)
    if t.data_type == c.BOOL:
        return np.ones(shape, dtype=np.bool_)
    return np.full(shape, 1 if t.data_type == c.FP32 else 3, dtype=NUMPY[t.data_type])  # top_p is <= 1


def key(inputs: dict, tier: str = "small") -> str:
    r = parse_request(inputs)
    return exact_key(namespace(tier, "v1", r.params), r.prompt_bytes)


def make_cache() -> ResponseCache:
    return ResponseCache(
        CacheConfig(enabled=True, semantic=False, capacity=10, ttl_s=60), MemoryBackend(10, 60), None, None
    )


def test_not_keyed_names_are_contract_inputs() -> None:
    names = {t.name for t in c.ENSEMBLE_INPUTS + c.LLM_EXTRA_INPUTS}
    assert NOT_KEYED <= names, NOT_KEYED - names


@pytest.mark.parametrize("t", [t for t in c.ENSEMBLE_INPUTS if t.name not in NOT_KEYED], ids=lambda t: t.name)
def test_every_output_affecting_contract_input_changes_the_key(t: c.Tensor) -> None:
    if t.name == "max_tokens":
        other = {**base(), "max_tokens": np.array([9], dtype=np.int32)}
    else:
        other = {**base(), t.name: sample(t)}
    assert key(other) != key(base())


@pytest.mark.parametrize("name", sorted(n for n in NOT_KEYED if n not in ("text_input",)))
def test_extra_output_and_transport_inputs_leave_the_key_alone(name: str) -> None:
    t = next(t for t in c.ENSEMBLE_INPUTS + c.LLM_EXTRA_INPUTS if t.name == name)
    v = np.array([b"use"], dtype=object) if name == "cache" else sample(t)
    assert key({**base(), name: v}) == key(base())


def test_repetition_penalty_alone_gives_another_key_and_equal_values_the_same() -> None:
    two = {**base(), "repetition_penalty": np.array([2.0], dtype=np.float32)}
    assert key(two) != key(base())
    assert key(two) == key({**base(), "repetition_penalty": np.array([[2.0]], dtype=np.float32)})
    assert key(two) != key({**base(), "repetition_penalty": np.array([1.5], dtype=np.float32)})


def test_plain_request_namespace_is_unchanged_by_the_rule() -> None:
    # no extra inputs: the namespace has no "inputs" part, so existing cache entries stay valid
    r = parse_request(base())
    assert set(r.params) == {"max_tokens"}


@pytest.mark.parametrize(
    "extra",
    [
        {"return_context_logits": np.array([True])},
        {"return_generation_logits": np.array([True])},
        {"return_log_probs": np.array([True])},
        {"return_perf_metrics": np.array([True])},
        {"num_return_sequences": np.array([2], dtype=np.int32)},
        {"beam_width": np.array([4], dtype=np.int32)},
        {"lora_task_id": np.array([7], dtype=np.uint64)},
        {"guided_decoding_guide_type": np.array([b"json"], dtype=object)},
    ],
    ids=lambda d: next(iter(d)),
)
def test_requests_for_outputs_the_cache_lacks_bypass_it(extra: dict) -> None:
    cache = make_cache()
    plain = parse_request(base())
    look = cache.lookup(plain, "small")
    assert look.status == "miss" and cache.store(look, plain, "small", "", "cached text", 2)
    r = parse_request({**base(), **extra})
    assert r.bypass_reason is not None and next(iter(extra)) in r.bypass_reason
    res = cache.lookup(r, "small")
    assert res.status == "bypass" and res.entry is None and not res.cacheable
    assert not cache.cacheable(r)


def test_neutral_values_of_bypass_inputs_keep_the_cache() -> None:
    r = parse_request(
        {
            **base(),
            "num_return_sequences": np.array([1], dtype=np.int32),
            "return_log_probs": np.array([False]),
        }
    )
    assert r.bypass_reason is None and make_cache().cacheable(r)


def test_remote_tiers_refuse_what_they_cannot_carry() -> None:
    openai = TierConfig("cloud", "gpt-x", kind="remote", protocol="openai", url="http://127.0.0.1:9")
    triton = TierConfig("far", "llm", kind="remote", protocol="triton", url="http://127.0.0.1:9")
    local = TierConfig("small", "small")
    rep = parse_request({**base(), "repetition_penalty": np.array([2.0], dtype=np.float32)})
    why = remote_refusal(openai, rep)
    assert why is not None and "'repetition_penalty'" in why and "'cloud'" in why
    assert remote_refusal(triton, rep) is None and remote_refusal(local, rep) is None
    pres = parse_request(
        {
            **base(),
            "presence_penalty": np.array([0.5], dtype=np.float32),
            "frequency_penalty": np.array([0.2], dtype=np.float32),
        }
    )
    assert remote_refusal(openai, pres) is None
    logits = parse_request({**base(), "return_generation_logits": np.array([True])})
    for tier in (openai, triton):
        why = remote_refusal(tier, logits)
        assert why is not None and "'return_generation_logits'" in why
    assert remote_refusal(local, logits) is None


def test_openai_body_carries_presence_and_frequency_penalty() -> None:
    from tritonforge.model_repo_templates.tf_policy.remote import _openai_body

    openai = TierConfig("cloud", "gpt-x", kind="remote", protocol="openai", url="http://127.0.0.1:9")
    r = parse_request(
        {
            **base(),
            "presence_penalty": np.array([0.5], dtype=np.float32),
            "frequency_penalty": np.array([0.25], dtype=np.float32),
        }
    )
    body = _openai_body(openai, r, False)
    assert body["presence_penalty"] == 0.5 and body["frequency_penalty"] == 0.25
