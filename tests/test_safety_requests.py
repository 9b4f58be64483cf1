"""Request isolation: one request can never fail, stall or outlive another.

Unit tests of the validation functions, then one real Triton per module serving
examples/cascade-cpu.yaml on the tiny CPU engines (two tiers behind the `llm` entry; exact cache only),
reached over HTTP (the tier ensembles and `llm`) and gRPC (client disconnects).
"""

from __future__ import annotations

import json
import random
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.helpers.entry_repo import generate, metric_value, metrics_text
from tritonforge.model_repo_templates.tf_policy.config import parse_entry_config
from tritonforge.model_repo_templates.tf_policy.params import (
    MAX_BYTES_PER_TOKEN,
    RequestError,
    max_input_bytes,
    parse_request,
)
from tritonforge.model_repo_templates.tf_runtime.sampling import check_sampling

from .conftest import tiny_variant

# ---------------------------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(temperature=float("nan")), "temperature must be a finite number"),
        (dict(temperature=float("-inf")), "temperature must be a finite number"),
        (dict(temperature=-0.5), "temperature must be a finite number between 0"),
        (dict(top_p=0.0 - 1e-9), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_p=float("nan")), "top_p"),
        (dict(top_k=-1), "top_k must be between 0 and 2147483647"),
        (dict(top_k=2**31), "top_k must be between 0 and 2147483647"),
        (dict(top_k=2.5), "top_k must be an integer"),
        (dict(seed=-1), "seed must be between 0 and"),
        (dict(seed=2**64), "seed must be between 0 and"),
        (dict(min_tokens=-727379968), "min_tokens must be between 0"),
    ],
)
def test_check_sampling_refuses_non_finite_and_out_of_range(kwargs, words) -> None:
    args = dict(top_k=0, top_p=0.0, temperature=1.0, seed=None, min_tokens=0) | kwargs
    with pytest.raises(ValueError, match=words):
        check_sampling(**args)


def test_check_sampling_accepts_and_normalizes_the_edges() -> None:
    assert check_sampling(None, None, None, None, None) == (0, 0.0, 1.0, None, 0)
    assert check_sampling(2**31 - 1, 1.0, 0.0, 2**64 - 1, 5) == (2**31 - 1, 1.0, 0.0, 2**64 - 1, 5)
    assert check_sampling(np.int32(4), np.float32(0.5), np.float32(0.7), np.uint64(7), np.int32(0))[0] == 4


def _req(**inputs: Any):
    base = {"text_input": np.array([b"hello"], dtype=object), "max_tokens": np.array([8], dtype=np.int32)}
    return parse_request(base | {k: np.array([v]) for k, v in inputs.items()})


@pytest.mark.parametrize(
    "inputs, words",
    [
        (dict(temperature=float("nan")), "'temperature' must be a finite number"),
        (dict(top_p=float("inf")), "'top_p' must be a finite number"),
        (dict(top_p=2.0), "'top_p' must be between"),
        (dict(top_k=-727379968), "wraps around in the INT32 tensor"),
        (dict(min_tokens=-1), "'min_tokens' must be between"),
        (dict(max_tokens=np.int32(-727379968)), "wraps around"),
        (dict(end_id=-2), "'end_id' must be between"),
        (dict(top_k=1.5), "'top_k' must be an integer"),
    ],
)
def test_entry_parse_refuses_bad_sampling_values(inputs, words) -> None:
    with pytest.raises(RequestError, match=words):
        _req(**inputs)


def test_entry_parse_keeps_good_values() -> None:
    r = _req(temperature=0.7, top_p=0.9, top_k=40, seed=2**63, min_tokens=2)
    assert r.params["temperature"] == 0.7 and r.params["top_k"] == 40 and r.params["seed"] == 2**63


def _service(max_output_len: int = 256, max_input_len: int = 768, remote: bool = False):
    from tritonforge.model_repo_templates.tf_policy.router import Router, StaticPolicy
    from tritonforge.model_repo_templates.tf_policy.service import EntryService

    tiers = [
        {"name": "small", "model": "small_ensemble", "max_input_len": 64, "max_output_len": 32},
        {
            "name": "large",
            "model": "large_ensemble",
            "max_input_len": max_input_len,
            "max_output_len": max_output_len,
        },
    ]
    if remote:
        tiers.append({"name": "far", "kind": "remote", "url": "http://127.0.0.1:9", "model": "m"})
    cfg = parse_entry_config(
        json.dumps({"tiers": tiers, "router": {"enabled": True, "policy": "static", "default_tier": "small"}})
    )

    def never(*_a: Any) -> Any:
        raise AssertionError("a refused request must not reach a tier")

    return EntryService(cfg, Router(cfg, StaticPolicy(cfg)), never)


def test_entry_service_refuses_what_no_tier_can_serve_before_any_tier_call() -> None:
    svc = _service()
    try:
        with pytest.raises(RequestError, match="max_tokens=257 is more than any tier can generate"):
            svc.handle(parse_request({"text_input": "hi", "max_tokens": 257}), lambda r: None)
        with pytest.raises(RequestError, match="more than tier 'small' can generate .max_output_len 32"):
            svc.handle(parse_request({"text_input": "hi", "max_tokens": 33, "tier": "small"}), lambda r: None)
        big = "x" * (max_input_bytes(768) + 1)
        with pytest.raises(RequestError, match=f"text_input is {len(big)} bytes"):
            svc.handle(parse_request({"text_input": big, "max_tokens": 8}), lambda r: None)
    finally:
        svc.close()
    svc = _service(remote=True)  # a remote tier has no known limits: nothing is refused on them
    try:
        svc.validate(parse_request({"text_input": "hi", "max_tokens": 5000}))
    finally:
        svc.close()


def test_entry_service_does_not_retry_a_request_a_tier_refused() -> None:
    from tritonforge.model_repo_templates.tf_policy.remote import TierError
    from tritonforge.model_repo_templates.tf_policy.router import Router, StaticPolicy
    from tritonforge.model_repo_templates.tf_policy.service import EntryService

    cfg = parse_entry_config(
        json.dumps(
            {
                "tiers": [{"name": "a", "model": "a"}, {"name": "b", "model": "b"}],
                "router": {"enabled": True, "policy": "static", "default_tier": "a"},
            }
        )
    )
    called: list[str] = []

    def call(tier, req, timeout, cancel):
        called.append(tier.name)
        raise TierError(f"tier {tier.name}: preprocessing: prompt has 900 tokens", "invalid")
        yield  # pragma: no cover

    svc = EntryService(cfg, Router(cfg, StaticPolicy(cfg)), call)
    try:
        with pytest.raises(RequestError, match="prompt has 900 tokens"):
            svc.handle(parse_request({"text_input": "hi", "max_tokens": 4}), lambda r: None)
        assert called == ["a"]
    finally:
        svc.close()


# ------------------------------------------------------------------------------------------ through Triton


@pytest.fixture(scope="module")
def cascade(tmp_path_factory: pytest.TempPathFactory, tf_cache: Path):
    from tritonforge.builder.spec import load_spec
    from tritonforge.ensembles.render import emit_files, write_repository
    from tritonforge.ensembles.server import TritonServer, free_ports

    d = tmp_path_factory.mktemp("safety-requests")
    spec = tiny_variant("cascade-cpu.yaml", d)
    data = yaml.safe_load(spec.read_text())
    data["cache"]["semantic"] = False  # exact cache only: no MiniLM needed for these tests
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    files, _ = emit_files(load_spec(spec), spec.parent)
    write_repository(files, d / "repo")
    with TritonServer(d / "repo", free_ports(), log_path=d / "triton.log") as server:
        server.wait_ready(300)
        yield server


def _stream_http(url: str, model: str, payload: dict[str, Any], first: threading.Event, out: dict) -> None:
    """One /generate_stream call; sets `first` at its first event; records its events or its error."""
    req = urllib.request.Request(
        f"{url}/v2/models/{model}/generate_stream",
        data=json.dumps({**payload, "stream": True}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    events: list[dict] = []
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            for raw in r:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    first.set()
    except urllib.error.HTTPError as exc:
        out["error"] = exc.read().decode()
    finally:
        first.set()
        out["events"] = events
        out["done"] = True


LONG = {"max_tokens": 200, "min_tokens": 200, "end_id": -1, "top_k": 8, "seed": 3}


@pytest.mark.server
@pytest.mark.parametrize("model", ["small_ensemble", "llm"])
def test_nan_temperature_does_not_fail_the_requests_beside_it(cascade, model) -> None:
    url = cascade.http_url
    extra = {"tier": "small", "cache": "bypass"} if model == "llm" else {}
    results = [dict() for _ in range(4)]
    firsts = [threading.Event() for _ in range(4)]
    threads = [
        threading.Thread(
            target=_stream_http,
            args=(url, model, {"text_input": f"def f{i}(x):", **LONG, **extra}, firsts[i], results[i]),
        )
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for ev in firsts:
        assert ev.wait(120)
    status, bad = generate(
        url,
        {"text_input": "def g(y):", "max_tokens": 8, "temperature": float("nan"), "top_k": 5, **extra},
        model=model,
    )
    in_flight = sum(not r.get("done") for r in results)  # the good ones were running beside it
    for t in threads:
        t.join(180)
    assert status == 400 and "temperature" in bad["error"] and "finite" in bad["error"], bad
    assert "no tier could answer" not in bad["error"]
    assert in_flight >= 1
    for r in results:
        assert "error" not in r, r.get("error")
        assert sum(int(np.sum(e["num_output_tokens"])) for e in r["events"]) == 200


@pytest.mark.server
def test_int32_overflow_and_too_many_tokens_are_refused(cascade) -> None:
    url = cascade.http_url
    status, err = generate(url, {"text_input": "def f():", "max_tokens": 1000}, model="small_ensemble")
    assert status == 400 and "max_tokens must be between 1 and 256" in err["error"], err
    status, err = generate(url, {"text_input": "def f():", "max_tokens": 1000, "cache": "bypass"})
    assert status == 400 and "max_tokens=1000 is more than any tier can generate" in err["error"], err
    status, err = generate(url, {"text_input": "def f():", "max_tokens": 100, "tier": "small"})
    assert status == 200, err  # within the limit: served
    # Triton's HTTP frontend narrows JSON integers into the INT32 tensor: 10**12 arrives as -727379968
    status, err = generate(url, {"text_input": "def f():", "max_tokens": 8, "top_k": 10**12})
    assert (
        status == 400 and err["error"].startswith("bad request: input 'top_k'") and "wraps" in err["error"]
    ), err
    status, err = generate(
        url, {"text_input": "def f():", "max_tokens": 8, "top_k": 10**12}, model="small_ensemble"
    )
    assert status == 400 and "runtime_top_k must be between 0 and 2147483647" in err["error"], err
    status, err = generate(url, {"text_input": "def f():", "max_tokens": 10**12})
    assert status == 400 and "max_tokens" in err["error"] and "wraps" in err["error"], err


@pytest.mark.server
@pytest.mark.parametrize("model", ["small_ensemble", "llm"])
def test_huge_prompt_is_refused_before_tokenizing_and_others_are_served(cascade, model) -> None:
    url = cascade.http_url
    cfg = json.loads(urllib.request.urlopen(f"{url}/v2/models/small_preprocessing/config", timeout=10).read())
    assert cfg["instance_group"][0]["count"] >= 2  # one slow request cannot hold every other one
    limit = int(cfg["parameters"]["max_input_bytes"]["string_value"])
    assert limit == 768 * MAX_BYTES_PER_TOKEN
    huge = "x = 1\n" * (20 * 1024 * 1024 // 6)  # 20 MB
    out: dict[str, Any] = {}

    def send_huge() -> None:
        out["huge"] = generate(url, {"text_input": huge, "max_tokens": 8}, model=model, timeout=300)

    t = threading.Thread(target=send_huge)
    t.start()
    status, good = generate(
        url,
        {"text_input": "def f(x):", "max_tokens": 8, "cache": "bypass"}
        if model == "llm"
        else {"text_input": "def f(x):", "max_tokens": 8},
        model=model,
    )
    t.join(300)
    assert status == 200 and good["text_output"], good
    status, err = out["huge"]
    assert status == 400 and f"text_input is {len(huge)} bytes" in err["error"], err
    assert "prompt has" not in err["error"]  # refused by size, never tokenized ("prompt has N tokens")


@pytest.mark.server
def test_a_request_a_tier_refuses_is_not_tried_on_every_tier(cascade) -> None:
    random.seed(1)
    prompt = " ".join(str(random.random()) for _ in range(400))  # ~8 KB: under the byte bound, > 768 tokens
    assert len(prompt.encode()) < max_input_bytes(768)
    status, err = generate(cascade.http_url, {"text_input": prompt, "max_tokens": 8, "cache": "bypass"})
    assert status == 400 and err["error"].startswith("bad request:"), err
    assert "more than max_input_len 768" in err["error"] and "no tier could answer" not in err["error"]
    assert ("small_ensemble" in err["error"]) != ("large_ensemble" in err["error"])  # one tier only


def _engine_metric(url: str, name: str, model: str) -> float:
    return metric_value(metrics_text(url), name, model=model)


@pytest.mark.server
def test_dropped_streams_stop_generating(cascade) -> None:
    """gRPC clients go away mid-stream: the `llm` entry stops its tier's engine (server-side counters)."""
    import tritonclient.grpc as grpcclient

    m = cascade.metrics_url
    engine = "large_tensorrt_llm"
    tokens0 = _engine_metric(m, "tf_cpu_engine_output_tokens", engine)
    cancelled0 = _engine_metric(m, "tf_cpu_engine_cancelled_requests", engine)
    n, max_tokens = 8, 256
    seen: dict[str, int] = {}
    lock = threading.Lock()
    started = threading.Event()

    def callback(result, error) -> None:
        if result is None:
            return
        with lock:
            rid = result.get_response().id
            seen[rid] = seen.get(rid, 0) + 1
            if len(seen) == n:
                started.set()

    client = grpcclient.InferenceServerClient(cascade.grpc_url)
    client.start_stream(callback=callback)

    def t(name: str, v: Any, dtype: str) -> Any:
        a = np.array([v], dtype=object if dtype == "BYTES" else (np.int32 if dtype == "INT32" else bool))
        x = grpcclient.InferInput(name, list(a.shape), dtype)
        x.set_data_from_numpy(a)
        return x

    try:
        for i in range(n):
            inputs = [
                t("text_input", f"def drop{i}(x):".encode(), "BYTES"),
                t("max_tokens", max_tokens, "INT32"),
                t("min_tokens", max_tokens, "INT32"),
                t("end_id", -1, "INT32"),
                t("stream", True, "BOOL"),
                t("tier", b"large", "BYTES"),
                t("cache", b"bypass", "BYTES"),
            ]
            client.async_stream_infer("llm", inputs, request_id=f"drop{i}")
        assert started.wait(120), seen
    finally:
        client.stop_stream(cancel_requests=True)  # the clients go away mid-stream
        client.close()
    for _ in range(600):
        if _engine_metric(m, "tf_cpu_engine_active_requests", engine) == 0:
            break
        threading.Event().wait(0.1)
    assert _engine_metric(m, "tf_cpu_engine_active_requests", engine) == 0
    threading.Event().wait(0.3)  # the metric thread publishes every 20 ms
    generated = _engine_metric(m, "tf_cpu_engine_output_tokens", engine) - tokens0
    cancelled = _engine_metric(m, "tf_cpu_engine_cancelled_requests", engine) - cancelled0
    assert cancelled == n, (cancelled, generated)
    assert generated < n * max_tokens, generated
    # the entry's counters are flushed to Triton every 0.5 s (off the request path)
    for _ in range(50):
        if metric_value(metrics_text(m), "tf_entry_errors_total", kind="cancelled", model="llm") >= 1:
            break
        threading.Event().wait(0.1)
    assert metric_value(metrics_text(m), "tf_entry_errors_total", kind="cancelled", model="llm") >= 1
