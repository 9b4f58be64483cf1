"""The `llm` entry says so, loudly and as a metric, when its environment lacks what its config asks for.

A semantic cache whose embedding model cannot load keeps serving (exact matching only); before, the only
trace was a warning. Now: an ERROR line in the Triton log and tf_entry_degraded{component="embedder"} = 1.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers.entry_repo import (
    build_repo,
    entry_config,
    generate,
    metric_value,
    metrics_text,
    write_llm_model,
)
from tritonforge.ensembles.server import TritonServer, free_ports


def test_missing_embedder_is_logged_and_exported(tmp_path: Path, tf_cache: Path) -> None:
    broken = entry_config(
        router={"enabled": False}, cache={"embedding_model": str(tmp_path / "no-such-model")}
    )
    repo = build_repo(tmp_path / "repo", broken)
    write_llm_model(repo, entry_config(router={"enabled": False}, cache={"semantic": False}), name="llm_ok")
    with TritonServer(repo, free_ports(), log_path=tmp_path / "triton.log") as server:
        server.wait_ready(240)
        status, body = generate(server.http_url, {"text_input": "hello there", "max_tokens": 4})
        assert status == 200, body  # degraded, not down
        for _ in range(40):  # custom metrics appear once the models set them
            text = metrics_text(server.metrics_url)
            if "tf_entry_degraded" in text:
                break
        log = server.log_text()
    assert metric_value(text, "tf_entry_degraded", model="llm", component="embedder") == 1.0
    assert metric_value(text, "tf_entry_degraded", model="llm", component="cache_backend") == 0.0
    assert metric_value(text, "tf_entry_degraded", model="llm_ok", component="embedder") == 0.0
    assert "llm: DEGRADED (embedder)" in log and "DEGRADED (cache_backend)" not in log
