"""The `llm` entry model through a real Triton (CPU): routing, fallback, cache, streaming, errors.

Tiers are mock ensemble-contract models (they stand in for engines and say which model answered
and which call it was, so a cache hit is told apart from a regeneration).
"""

from __future__ import annotations

import json
import queue
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.entry_repo import (
    build_repo,
    entry_config,
    generate,
    generate_stream,
    metric_value,
    metrics_text,
    shared_embedder,
    write_llm_model,
)
from tritonforge.ensembles.server import TritonServer, free_ports
from tritonforge.model_repo_templates.tf_policy.classifier import train

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("llm-entry")
    ports = free_ports()
    cfg = entry_config(router={"tier_timeout_s": 1.5})
    # a remote Triton tier: this same server's generate endpoint, over HTTP
    cfg["tiers"].append(
        {
            "name": "mirror",
            "kind": "remote",
            "protocol": "triton",
            "url": f"http://127.0.0.1:{ports.http}",
            "model": "large_ensemble",
            "timeout_s": 5,
        }
    )
    repo = build_repo(d / "repo", cfg)
    # llm_clf: the classifier policy, with a classifier trained here on real embeddings
    from .test_router_cli import COMPLEX, SIMPLE

    rows = [{"prompt": p, "tier": "small", "max_tokens": None} for p in SIMPLE] + [
        {"prompt": p, "tier": "large", "max_tokens": None} for p in COMPLEX
    ]
    clf = train(rows, shared_embedder().embed_batch, "builtin:all-minilm-l6-v2")
    clf_cfg = entry_config(
        router={"policy": "classifier"}, cache={"enabled": False}, classifier_file="router_classifier.json"
    )
    write_llm_model(repo, clf_cfg, name="llm_clf")
    (repo / "llm_clf" / "1" / "router_classifier.json").write_text(clf.to_json())
    s = TritonServer(
        repo, ports, log_path=d / "triton.log", extra_args=["--model-control-mode=explicit", "--load-model=*"]
    )
    s.start()
    try:
        s.wait_ready(240)
        yield s
    finally:
        s.stop()


def gen(server, text: str, max_tokens: int = 6, **kw: object) -> dict:
    status, body = generate(server.http_url, {"text_input": text, "max_tokens": max_tokens, **kw})
    assert status == 200, body
    return body


def test_short_prompts_go_small_long_or_complex_go_large(server) -> None:
    short = gen(server, "What is the capital of Italy?", cache="bypass")
    assert short["tier"] == "small" and short["text_output"].startswith(" small_ensemble")
    long = gen(
        server, "Summarize this: " + "the market rallied as investors cheered the news " * 8, cache="bypass"
    )
    assert long["tier"] == "large" and long["text_output"].startswith(" large_ensemble")
    code = gen(server, "def fib(n): fix this function", cache="bypass")
    assert code["tier"] == "large"
    many = gen(server, "Tell me a story", max_tokens=100, cache="bypass")
    assert many["tier"] == "large"


def test_forced_tier_is_honoured(server) -> None:
    body = gen(server, "hi", tier="large", cache="bypass")
    assert body["tier"] == "large" and body["text_output"].startswith(" large_ensemble")


def test_same_prompt_twice_is_an_exact_hit_streamed_and_not(server) -> None:
    first = gen(server, "Name a primary colour.")
    assert first["cache_status"] == "miss"
    second = gen(server, "Name a primary colour.")
    assert second["cache_status"] == "hit-exact" and second["text_output"] == first["text_output"]
    assert second["num_output_tokens"] == first["num_output_tokens"] == 6
    events = generate_stream(server.http_url, {"text_input": "Name a primary colour.", "max_tokens": 6})
    assert len(events) >= 2 and {e["cache_status"] for e in events} == {"hit-exact"}
    assert "".join(e["text_output"] for e in events) == first["text_output"]


def test_streamed_miss_then_streamed_hit(server) -> None:
    events = generate_stream(server.http_url, {"text_input": "Count to three.", "max_tokens": 5})
    assert [e["cache_status"] for e in events] == ["miss"] * 5
    text = "".join(e["text_output"] for e in events)
    assert text.startswith(" small_ensemble call") and sum(e["num_output_tokens"] for e in events) == 5
    again = generate_stream(server.http_url, {"text_input": "Count to three.", "max_tokens": 5})
    assert {e["cache_status"] for e in again} == {"hit-exact"}
    assert "".join(e["text_output"] for e in again) == text
    assert gen(server, "Count to three.", 5)["text_output"] == text  # and non-streamed


def wait_stored(server, at_least: float) -> None:
    """Insertions follow the response: wait until the model has written `at_least` entries in all."""
    deadline = time.monotonic() + 30
    while metric_value(metrics_text(server.metrics_url), "tf_cache_stores_total") < at_least:
        assert time.monotonic() < deadline, "the insertion never happened"
        time.sleep(0.1)


def test_paraphrase_is_a_semantic_hit(server) -> None:
    # The semantic lookup runs beside generation and wins only before the first token: the tier is made
    # slow (1 s, under the 1.5 s tier timeout) so that the hit can win; both prompts carry the marker
    # (its "=" routes them to the large tier).
    stored = metric_value(metrics_text(server.metrics_url), "tf_cache_stores_total")
    first = gen(server, "How many legs does a spider have? #sleep-large_ensemble=1")
    wait_stored(server, stored + 1)
    para = gen(server, "How many legs has a spider got? #sleep-large_ensemble=1")
    assert para["cache_status"] == "hit-semantic" and para["text_output"] == first["text_output"]
    other = gen(server, "What is the boiling point of water?")
    assert other["cache_status"] == "miss"


def test_other_temperature_or_max_tokens_is_not_a_hit(server) -> None:
    base = gen(server, "Which planet is largest?", temperature=0.0)
    assert gen(server, "Which planet is largest?", temperature=0.0)["cache_status"] == "hit-exact"
    t = gen(server, "Which planet is largest?", temperature=0.5)
    assert t["cache_status"] == "miss" and t["text_output"] != base["text_output"]
    m = gen(server, "Which planet is largest?", max_tokens=7, temperature=0.0)
    assert m["cache_status"] == "miss"
    sampled = gen(server, "Which planet is largest?", top_k=40)  # sampled, no seed: never cached
    assert sampled["cache_status"] == "bypass"
    assert gen(server, "Which planet is largest?", top_k=40)["cache_status"] == "bypass"


def test_bypass_and_refresh(server) -> None:
    first = gen(server, "Spell cat.")
    by = gen(server, "Spell cat.", cache="bypass")
    assert by["cache_status"] == "bypass" and by["text_output"] != first["text_output"]
    fresh = gen(server, "Spell cat.", cache="refresh")
    assert fresh["cache_status"] == "miss" and fresh["text_output"] != first["text_output"]
    assert gen(server, "Spell cat.")["text_output"] == fresh["text_output"]


def test_failing_or_slow_tier_falls_back(server) -> None:
    body = gen(server, "hello #fail-small_ensemble", cache="bypass")
    assert body["tier"] == "large" and body["text_output"].startswith(" large_ensemble")
    slow = gen(server, "hello #sleep-small_ensemble=4", cache="bypass")
    assert slow["tier"] == "large"
    status, err = generate(
        server.http_url, {"text_input": "x #fail-large_ensemble", "max_tokens": 4, "tier": "large"}
    )
    assert status >= 400 and "simulated engine failure" in err["error"]
    stream = generate_stream(
        server.http_url, {"text_input": "hey #fail-small_ensemble", "max_tokens": 3, "cache": "bypass"}
    )
    assert {e["tier"] for e in stream} == {"large"}


def test_unloaded_tier_falls_back_and_tier_says_so(server) -> None:
    def repo_call(action: str, model: str) -> None:
        req = urllib.request.Request(
            f"{server.http_url}/v2/repository/models/{model}/{action}", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200

    repo_call("unload", "small_ensemble")
    try:
        body = gen(server, "short question while small is down", cache="bypass")
        assert body["tier"] == "large"
        events = generate_stream(
            server.http_url, {"text_input": "another short one", "max_tokens": 3, "cache": "bypass"}
        )
        assert {e["tier"] for e in events} == {"large"}
    finally:
        repo_call("load", "small_ensemble")
    assert gen(server, "short question after reload", cache="bypass")["tier"] == "small"


def test_classifier_policy_in_triton(server) -> None:
    for prompt, want in [
        ("What is the capital of Peru?", "small"),
        ("Say thanks in German.", "small"),
        ("Implement a red-black tree in C with deletion and prove its height bound.", "large"),
        ("Write a Go program that shards a Postgres table across nodes.", "large"),
    ]:
        status, body = generate(server.http_url, {"text_input": prompt, "max_tokens": 4}, model="llm_clf")
        assert status == 200 and body["tier"] == want, (prompt, body)
    assert body["cache_status"] == "bypass"  # cache off in llm_clf


def test_remote_triton_tier(server) -> None:
    body = gen(server, "hi remote", tier="mirror", cache="bypass")
    assert body["tier"] == "mirror" and body["text_output"].startswith(" large_ensemble call")
    events = generate_stream(server.http_url, {"text_input": "hi remote", "max_tokens": 4, "tier": "mirror"})
    assert (
        len(events) == 4 and {e["tier"] for e in events} == {"mirror"} and events[0]["cache_status"] == "miss"
    )
    assert gen(server, "hi remote", 4, tier="mirror")["cache_status"] == "hit-exact"


def test_bad_requests_get_clear_errors_and_server_stays_up(server) -> None:
    status, body = generate(server.http_url, {"text_input": "hi", "max_tokens": 4, "tier": "gigantic"})
    assert (
        status == 400
        and "unknown tier 'gigantic'" in body["error"]
        and "small, large, mirror" in body["error"]
    )
    status, body = generate(server.http_url, {"text_input": "hi", "max_tokens": 4, "cache": "sometimes"})
    assert status == 400 and "'cache' must be one of use, bypass, refresh" in body["error"]
    status, body = generate(server.http_url, {"text_input": "hi", "max_tokens": 0})
    assert status == 400 and "max_tokens" in body["error"]
    assert server.is_ready()
    assert gen(server, "still alive?", cache="bypass")["tier"] == "small"


def test_grpc_streaming(server) -> None:
    import tritonclient.grpc as grpcclient

    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)

    def inp(name: str, value: object, dtype: str) -> grpcclient.InferInput:
        arr = np.array([value], dtype=object if dtype == "BYTES" else None)
        if dtype == "INT32":
            arr = arr.astype(np.int32)
        elif dtype == "BOOL":
            arr = arr.astype(bool)
        i = grpcclient.InferInput(name, list(arr.shape), dtype)
        i.set_data_from_numpy(arr)
        return i

    def run(prompt: str) -> tuple[list[str], set[str]]:
        inputs = [
            inp("text_input", prompt.encode(), "BYTES"),
            inp("max_tokens", 4, "INT32"),
            inp("stream", True, "BOOL"),
        ]
        client.async_stream_infer("llm", inputs, enable_empty_final_response=True)
        chunks, statuses = [], set()
        while True:
            result, error = results.get(timeout=30)
            assert error is None, error
            final = result.get_response().parameters.get("triton_final_response")
            out = result.as_numpy("text_output")
            if out is not None:
                chunks.append(out[0].decode())
                statuses.add(result.as_numpy("cache_status")[0].decode())
            if final is not None and final.bool_param:
                return chunks, statuses

    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        chunks, statuses = run("Stream me a reply.")
        assert len(chunks) == 4 and statuses == {"miss"}
        again, statuses = run("Stream me a reply.")
        assert len(again) >= 2 and statuses == {"hit-exact"} and "".join(again) == "".join(chunks)
    finally:
        client.stop_stream()
        client.close()


def test_metrics_count_decisions_and_cache(server) -> None:
    gen(server, "metrics probe one")
    gen(server, "metrics probe one")
    gen(server, "metrics probe: prove it")
    gen(server, "metrics probe #fail-small_ensemble", cache="bypass")
    generate(server.http_url, {"text_input": "hi", "max_tokens": 4, "tier": "nope"})
    time.sleep(1.2)  # the model flushes its metric updates every 0.5 s
    text = metrics_text(server.metrics_url)
    assert metric_value(text, "tf_router_decisions_total", tier="small", policy="heuristic") >= 1
    assert metric_value(text, "tf_router_decisions_total", tier="large", policy="heuristic") >= 1
    assert metric_value(text, "tf_cache_lookups_total", result="hit-exact") >= 1
    assert metric_value(text, "tf_cache_lookups_total", result="miss") >= 1
    assert metric_value(text, "tf_cache_lookup_count") >= 2
    assert metric_value(text, "tf_router_fallbacks_total", from_tier="small", to_tier="large") >= 1
    assert metric_value(text, "tf_entry_errors_total", kind="bad_request") >= 1


def test_entry_config_is_what_the_model_got(server) -> None:
    cfg = (Path(server.repo) / "llm" / "config.pbtxt").read_text()
    assert (
        "entry_config" in cfg
        and json.loads(json.loads(cfg.split("string_value: ")[1].rsplit(" }", 2)[0]))["tiers"]
    )
