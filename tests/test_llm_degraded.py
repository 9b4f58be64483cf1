"""The `llm` entry says so, loudly and as a metric, when its environment lacks what its config asks for.

A semantic cache whose embedding model cannot load keeps serving (exact matching only); before, the only
trace was a warning. Now: an ERROR line in the Triton log and tf_cache_degraded{reason="embedding"} = 1,
labelled with the entry model (0 for a model that lacks nothing).
"""

from __future__ import annotations

import time
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
        for _ in range(120):  # custom metrics appear once both models have flushed them (every 0.5 s)
            text = metrics_text(server.metrics_url)
            series = [line for line in text.splitlines() if line.startswith("tf_cache_degraded{")]
            if all(any(f'model="{m}"' in line for line in series) for m in ("llm", "llm_ok")):
                break
            time.sleep(0.25)
        log = server.log_text()
    assert metric_value(text, "tf_cache_degraded", model="llm", reason="embedding") == 1.0
    assert metric_value(text, "tf_cache_degraded", model="llm", reason="redis") == 0.0
    assert metric_value(text, "tf_cache_degraded", model="llm_ok", reason="embedding") == 0.0
    assert "cache degraded (embedding)" in log and "cache degraded (redis)" not in log
    assert "tf_entry_degraded" not in text  # one degradation gauge, not two
