"""examples/cascade-cpu.yaml as `tritonforge emit` renders it (tiny CPU engines), through a real Triton."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.entry_repo import generate, generate_stream
from tritonforge.ensembles.server import TritonServer, free_ports

from .conftest import tiny_variant

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def cascade(tmp_path_factory: pytest.TempPathFactory, tf_cache: Path):
    from tritonforge.builder.spec import load_spec
    from tritonforge.ensembles.render import emit_files, write_repository

    d = tmp_path_factory.mktemp("cascade")
    spec = tiny_variant("cascade-cpu.yaml", d)
    files, _ = emit_files(load_spec(spec), spec.parent)
    write_repository(files, d / "repo")
    with TritonServer(
        d / "repo", free_ports(), log_path=d / "triton.log"
    ) as server:  # stops the server whatever happens
        server.wait_ready(300)
        yield server


def test_emitted_cascade_routes_caches_and_streams(cascade) -> None:
    url = cascade.http_url
    status, short = generate(url, {"text_input": "hello there", "max_tokens": 8})
    assert status == 200 and short["tier"] == "small" and short["cache_status"] == "miss", short
    status, code = generate(url, {"text_input": "def fibonacci(n):", "max_tokens": 8})
    assert status == 200 and code["tier"] == "large", code
    status, again = generate(url, {"text_input": "hello there", "max_tokens": 8})
    assert again["cache_status"] == "hit-exact" and again["text_output"] == short["text_output"]
    events = generate_stream(url, {"text_input": "hello there", "max_tokens": 8})
    assert {e["cache_status"] for e in events} == {"hit-exact"}
    assert "".join(e["text_output"] for e in events) == short["text_output"]
    events = generate_stream(url, {"text_input": "import os", "max_tokens": 6, "tier": "large"})
    # the first token alone, then the rest in groups of the tier's stream interval: 6 tokens in all
    counts = [e["num_output_tokens"] for e in events]
    assert counts[0] == 1 and sum(counts) == 6, counts
    assert {e["tier"] for e in events} == {"large"} and events[0]["cache_status"] == "miss"
    status, hit = generate(url, {"text_input": "import os", "max_tokens": 6, "tier": "large"})
    assert hit["cache_status"] == "hit-exact" and hit["text_output"] == "".join(
        e["text_output"] for e in events
    )
    status, other = generate(url, {"text_input": "hello there", "max_tokens": 8, "temperature": 0.5})
    assert other["cache_status"] == "miss"
    status, err = generate(url, {"text_input": "hello", "max_tokens": 8, "tier": "medium"})
    assert status == 400 and "unknown tier 'medium'" in err["error"]


def test_full_contract_inputs_reach_the_tier_and_are_keyed(cascade) -> None:
    url = cascade.http_url
    prompt = {"text_input": "the the the cat sat on the mat the", "max_tokens": 16, "tier": "small"}
    status, plain = generate(url, prompt)
    assert status == 200 and plain["cache_status"] == "miss", plain
    status, again = generate(url, prompt)
    assert again["cache_status"] == "hit-exact"  # the same request is cached...
    # < 1 rewards tokens already seen (prompt included): a sure change even on a tiny random model
    status, pen = generate(url, {**prompt, "repetition_penalty": 0.01})
    # ...but one that differs only in repetition_penalty is not served that answer: it reaches the engine
    assert status == 200 and pen["cache_status"] == "miss", pen
    assert pen["text_output"] != plain["text_output"]
    status, pen2 = generate(url, {**prompt, "repetition_penalty": 0.01})
    assert pen2["cache_status"] == "hit-exact" and pen2["text_output"] == pen["text_output"]
    status, perf = generate(url, {**prompt, "return_perf_metrics": True})
    assert status == 200 and perf["cache_status"] == "bypass", perf  # outputs the cache does not hold
    assert perf["text_output"] == plain["text_output"]
    for name in (
        "arrival_time_ns",
        "first_token_time_ns",
        "last_token_time_ns",
        "kv_cache_alloc_total_blocks",
    ):
        assert name in perf, sorted(perf)
    assert perf["first_token_time_ns"] >= perf["arrival_time_ns"] > 0
    assert "arrival_time_ns" not in plain
    status, bad = generate(url, {**prompt, "repetition_penalty": 0.0})  # the engine itself checks it
    assert status == 400 and "repetition_penalty" in bad["error"], bad
