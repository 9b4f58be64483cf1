"""Through a real Triton (CPU): with the semantic cache on, a miss is not held up by the embedder.

The `llm` model runs with TRITONFORGE_EMBED_GATE set: every embedding waits until the gate file
exists. A miss answered in full while the gate is still closed was, by construction, not waiting for
any embedding (an ordering fact, not a timing threshold); after the gate opens, the insertion lands
and a paraphrase is served from the semantic layer, cancelling the slow tier's generation.
"""

from __future__ import annotations

import time

import pytest

from tests.helpers.entry_repo import (
    build_repo,
    entry_config,
    generate,
    generate_stream,
    metric_value,
    metrics_text,
)
from tritonforge.ensembles.server import TritonServer, free_ports

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("fast-path")
    gate = d / "embedder-may-run"
    repo = build_repo(d / "repo", entry_config(router={"tier_timeout_s": 5.0}))
    s = TritonServer(repo, free_ports(), log_path=d / "triton.log", env={"TRITONFORGE_EMBED_GATE": str(gate)})
    s.start()
    try:
        s.wait_ready(240)
        yield s, gate
    finally:
        s.stop()


def metric(server, name: str, **labels: str) -> float:
    return metric_value(metrics_text(server.metrics_url), name, **labels)


def wait_metric(server, name: str, at_least: float, **labels: str) -> None:
    deadline = time.monotonic() + 60
    while metric(server, name, **labels) < at_least:
        assert time.monotonic() < deadline, f"{name}{labels} never reached {at_least}"
        time.sleep(0.1)


# the tier takes 1 s on these (mock marker; "=" routes them to large), so a semantic hit can win the race
SPIDER = "How many legs does a spider have? #sleep-large_ensemble=1"
SPIDER_PARAPHRASE = "How many legs has a spider got? #sleep-large_ensemble=1"


def test_a_miss_does_not_wait_for_the_embedder(gated) -> None:
    server, gate = gated
    assert not gate.exists()
    events = generate_stream(server.http_url, {"text_input": SPIDER, "max_tokens": 5})
    # every token (the first included) arrived while no embedding could have finished
    assert not gate.exists()
    assert [e["cache_status"] for e in events] == ["miss"] * 5
    first = "".join(e["text_output"] for e in events)
    assert first.startswith(" large_ensemble call")
    status, body = generate(
        server.http_url, {"text_input": "What is the boiling point of water?", "max_tokens": 4}
    )
    assert status == 200 and body["cache_status"] == "miss" and not gate.exists()
    # an exact repeat is a hit at once: the exact entry does not wait for the embedding either
    status, again = generate(server.http_url, {"text_input": SPIDER, "max_tokens": 5})
    assert status == 200 and again["cache_status"] == "hit-exact" and again["text_output"] == first
    assert metric(server, "tf_cache_entries") == 0  # nothing embedded yet
    assert not gate.exists()

    gate.touch()  # the embedder may run: queued lookups finish, the insertions are embedded and indexed
    wait_metric(server, "tf_cache_entries", 2)
    # a paraphrase while the tier is slow: the verified semantic hit wins and the generation is cancelled
    status, para = generate(server.http_url, {"text_input": SPIDER_PARAPHRASE, "max_tokens": 5})
    assert status == 200 and para["cache_status"] == "hit-semantic" and para["text_output"] == first
    wait_metric(server, "tf_cache_semantic_race_total", 1, outcome="won")
    wait_metric(server, "tf_tier_requests_total", 1, outcome="cancelled")
