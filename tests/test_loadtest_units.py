"""Unit tests of the load tester's pure parts: parsing, metrics, compare, workloads, SSE, reports."""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tritonforge.errors import UserError
from tritonforge.loadtest import compare, cost, metrics, prom, protocols, svg, workload
from tritonforge.loadtest.parsing import parse_duration, parse_kv_list, parse_number_list, parse_slo
from tritonforge.loadtest.records import RequestRecord, read_csv, write_csv
from tritonforge.loadtest.report import render_html, summary_table

# ------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60s", 60.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1.5h", 5400.0),
        ("250us", 0.00025),
        ("7", 7.0),
        (" 3 s ", 3.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "abc", "5 parsecs", "-3s", "1e3s"])
def test_parse_duration_rejects(bad: str) -> None:
    with pytest.raises(UserError) as e:
        parse_duration(bad)
    assert "\n" not in str(e.value)


def test_parse_slo() -> None:
    assert parse_slo("ttft=500ms,itl=50ms") == {"ttft_ms": 500.0, "itl_ms": 50.0}
    assert parse_slo("e2e=2s, ttft=0.25s") == {"e2e_ms": 2000.0, "ttft_ms": 250.0}
    assert parse_slo("ttft=300") == {"ttft_ms": 300.0}  # bare numbers are ms
    assert parse_slo(None) == {} and parse_slo("") == {}


@pytest.mark.parametrize("bad", ["ttft", "ttft=", "latency=5ms", "ttft=fast", "ttft=0ms", "ttft=5ms,,itl"])
def test_parse_slo_rejects_with_one_line(bad: str) -> None:
    with pytest.raises(UserError) as e:
        parse_slo(bad)
    msg = str(e.value)
    assert "\n" not in msg and "--slo" in msg


def test_parse_lists() -> None:
    assert parse_number_list("1,2, 4,8", "--concurrency") == [1, 2, 4, 8]
    assert parse_number_list("0.5,2", "--request-rate", integer=False) == [0.5, 2.0]
    assert parse_kv_list("A=1,b=x", "w") == {"a": "1", "b": "x"}
    for bad in ("1,x", "0,1", ""):
        with pytest.raises(UserError):
            parse_number_list(bad, "--concurrency")


# ------------------------------------------------------------------------------------------ metrics


def test_percentile_matches_numpy_linear() -> None:
    np = pytest.importorskip("numpy")
    rng = random.Random(3)
    for n in (1, 2, 3, 10, 101, 1000):
        xs = [rng.expovariate(1.0) for _ in range(n)]
        for p in (0, 1, 50, 90, 99, 99.9, 100):
            assert metrics.percentile(xs, p) == pytest.approx(float(np.percentile(xs, p)))
    with pytest.raises(ValueError):
        metrics.percentile([], 50)


def test_stats_fields() -> None:
    s = metrics.stats([0.001, 0.002, 0.003, 0.004, None], scale=1000)
    assert s["count"] == 4 and s["avg"] == 2.5 and s["min"] == 1.0 and s["max"] == 4.0
    assert s["p50"] == 2.5 and s["p90"] == pytest.approx(3.7) and s["p99"] == pytest.approx(3.97)
    assert metrics.stats([]) == {"count": 0}


def _rec(
    i: int, start: float, ttft: float | None, e2e: float, tokens: int, ok: bool = True, **kw: object
) -> RequestRecord:
    return RequestRecord(
        id=str(i),
        level="c=2",
        start=start,
        ttft_s=ttft,
        e2e_s=e2e,
        output_tokens_server=tokens if ok else None,
        ok=ok,
        error_type="" if ok else "server_error",
        error="" if ok else "boom",
        **kw,
    )  # type: ignore[arg-type]


def test_level_metrics_definitions() -> None:
    recs = [
        _rec(0, 100.0, 0.1, 1.0, 10),  # itl = 0.9 / 9 = 0.1
        _rec(1, 100.5, 0.2, 1.5, 14),  # itl = 1.3 / 13 = 0.1; ends at 102.0
        _rec(2, 101.0, None, 0.2, 0, ok=False),
        _rec(3, 99.0, 0.01, 0.02, 5, warmup=True),  # excluded
    ]
    m = metrics.level_metrics(recs, {"ttft_ms": 150.0})
    assert m["requests"] == 3 and m["completed"] == 2 and m["failed"] == 1
    assert m["duration_s"] == pytest.approx(2.0)  # first request 100.0, last response 102.0
    assert m["output_tokens"] == 24 and m["output_tokens_per_s"] == pytest.approx(12.0)
    assert m["requests_per_s"] == pytest.approx(1.0)
    assert m["goodput_requests_per_s"] == pytest.approx(0.5)  # only the first meets TTFT <= 150 ms
    assert m["itl_ms"]["p50"] == pytest.approx(100.0)
    assert m["ttft_ms"]["max"] == pytest.approx(200.0)
    assert m["error_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["errors"]["by_type"] == {"server_error": 1}


def test_itl_and_output_tokens_fallback() -> None:
    r = RequestRecord(id="x", start=0, ttft_s=0.1, e2e_s=0.5, output_tokens_retok=5)
    assert r.output_tokens == 5 and r.itl_s == pytest.approx(0.1)
    r.output_tokens_server = 3
    assert r.output_tokens == 3 and r.itl_s == pytest.approx(0.2)
    assert RequestRecord(id="y", start=0, ttft_s=0.1, e2e_s=0.5, output_tokens_server=1).itl_s is None


def test_median_metrics() -> None:
    runs = [{"output_tokens_per_s": v, "ttft_ms": {"p50": v * 2}, "label": "a"} for v in (1.0, 5.0, 3.0)]
    med = metrics.median_metrics(runs)
    assert med["output_tokens_per_s"] == 3.0 and med["ttft_ms"]["p50"] == 6.0 and med["repeats"] == 3


def test_token_check() -> None:
    recs = [_rec(0, 0, 0.1, 1, 10), _rec(1, 0, 0.1, 1, 10)]
    recs[0].output_tokens_retok, recs[1].output_tokens_retok = 10, 11
    tc = metrics.token_check(recs)
    assert tc == {
        "compared": 2,
        "server_total": 20,
        "retokenized_total": 21,
        "requests_differing": 1,
        "relative_difference": 0.05,
    }


def test_requests_csv_round_trip(tmp_path: Path) -> None:
    recs = [_rec(0, 100.0, 0.1, 1.0, 10), _rec(1, 100.5, None, 0.2, 0, ok=False)]
    write_csv(recs, tmp_path / "r.csv")
    rows = read_csv(tmp_path / "r.csv")
    assert [r["id"] for r in rows] == ["0", "1"]
    assert rows[0]["output_tokens"] == "10" and rows[1]["ok"] == "False" and "text" not in rows[0]
    assert float(rows[0]["end"]) == pytest.approx(101.0)


# ------------------------------------------------------------------------------------------ compare


def _report(tps: float, ttft: float, err: float = 0.0, label: str = "c=4", n: int = 1000) -> dict:
    return {
        "schema": "tritonforge.loadtest/1",
        "levels": [
            {
                "label": label,
                "metrics": {
                    "output_tokens_per_s": tps,
                    "requests_per_s": tps / 10,
                    "ttft_ms": {"count": n, "p50": ttft, "p90": ttft, "p99": ttft},
                    "itl_ms": {"count": n, "p50": 5.0},
                    "e2e_ms": {"count": n, "p50": 100.0},
                    "error_rate": err,
                },
            }
        ],
    }


def test_compare_direction_aware() -> None:
    base = _report(1000, 100)
    assert not compare.compare_reports(base, _report(1000, 100))["regression"]
    slower = compare.compare_reports(base, _report(700, 100))
    assert slower["regression"] and {r["metric"] for r in slower["rows"] if r["verdict"] == "REGRESSION"} >= {
        "output_tokens_per_s"
    }
    faster = compare.compare_reports(base, _report(1500, 50))
    assert not faster["regression"] and any(r["verdict"] == "improved" for r in faster["rows"])
    laggier = compare.compare_reports(base, _report(1000, 200))
    assert [r["metric"] for r in laggier["rows"] if r["verdict"] == "REGRESSION"] == [
        "ttft_ms.p50",
        "ttft_ms.p90",
        "ttft_ms.p99",
    ]
    row = next(r for r in laggier["rows"] if r["metric"] == "ttft_ms.p50")
    assert row["ratio"] == 2.0


def test_compare_needs_both_tolerances() -> None:
    # +50% TTFT but only +3 ms: within the 10 ms absolute tolerance -> not a regression
    assert not compare.compare_reports(_report(1000, 6), _report(1000, 9))["regression"]
    # tighter absolute tolerance makes it one
    tol = compare.parse_tolerances(["ttft=0.2:1ms"])
    assert compare.compare_reports(_report(1000, 6), _report(1000, 9), tol)["regression"]
    # error rate: absolute 1 point by default
    assert compare.compare_reports(_report(1000, 100, 0.0), _report(1000, 100, 0.05))["regression"]


def test_compare_does_not_gate_tails_of_few_samples() -> None:
    rows = compare.compare_reports(_report(1000, 100, n=100), _report(1000, 200, n=100))["rows"]
    verdicts = {r["metric"]: r["verdict"] for r in rows}
    assert verdicts["ttft_ms.p50"] == verdicts["ttft_ms.p90"] == "REGRESSION"
    assert verdicts["ttft_ms.p99"] == "few samples"  # 100 requests cannot estimate a p99
    few = compare.compare_reports(_report(1000, 100, n=5), _report(1000, 200, n=5))
    assert (
        not few["regression"] and next(r for r in few["rows"] if r["metric"] == "ttft_ms.p50")["samples"] == 5
    )


def test_parse_tolerances() -> None:
    t = compare.parse_tolerances(
        ["ttft=0.1:5ms", "e2e.p99=30%", "throughput=5%", "error_rate=:0.02", "itl=:1s"]
    )
    assert t == {
        "ttft_ms": (0.1, 5.0),
        "e2e_ms.p99": (0.3, None),
        "output_tokens_per_s": (0.05, None),
        "error_rate": (None, 0.02),
        "itl_ms": (None, 1000.0),
    }
    rules = {r.key: r for r in compare.rules(t)}
    assert (
        rules["ttft_ms.p99"].rel == 0.1 and rules["e2e_ms.p99"].rel == 0.3 and rules["e2e_ms.p50"].rel == 0.2
    )
    for bad in ("ttft", "nonsense=0.1", "ttft=x", "ttft=0.1ms:5", "ttft=-1"):
        with pytest.raises(UserError):
            compare.parse_tolerances([bad])


def test_compare_text_and_load_report(tmp_path: Path) -> None:
    result = compare.compare_reports(_report(1000, 100), _report(500, 100, label="c=4"))
    text = compare.format_comparison(result)
    assert "REGRESSION" in text.splitlines()[-1] and "output_tokens_per_s" in text
    p = tmp_path / "x.json"
    p.write_text("{}")
    with pytest.raises(UserError):
        compare.load_report(p)
    with pytest.raises(UserError):
        compare.load_report(tmp_path / "missing.json")


# ------------------------------------------------------------------------------------------ prometheus


PROM_BEFORE = """# TYPE nv_inference_request_success counter
nv_inference_request_success{model="ensemble",version="1"} 10
nv_inference_queue_duration_us{model="ensemble",version="1"} 1000
nv_inference_compute_infer_duration_us{model="ensemble",version="1"} 5000
nv_inference_request_duration_us{model="ensemble",version="1"} 8000
nv_inference_request_success{model="other",version="1"} 99
# TYPE tritonforge_router_decisions_total counter
tritonforge_router_decisions_total{tier="small"} 3
"""
PROM_AFTER = (
    PROM_BEFORE.replace("} 10\n", "} 30\n")
    .replace("} 1000\n", "} 3000\n")
    .replace("} 5000\n", "} 25000\n")
    .replace("} 8000\n", "} 30000\n")
    .replace('tier="small"} 3', 'tier="small"} 13')
    + "tritonforge_cache_entries 7\n"
)


def test_prometheus_diff() -> None:
    d = prom.diff(prom.parse(PROM_BEFORE), prom.parse(PROM_AFTER), "ensemble")
    assert d["triton"]["request_success"] == 20
    assert d["triton"]["avg_queue_us"] == 100.0 and d["triton"]["avg_compute_infer_us"] == 1000.0
    assert d["tritonforge"]["tritonforge_router_decisions_total{tier=small}"] == {
        "kind": "counter",
        "delta": 10,
        "after": 13,
    }
    assert d["tritonforge"]["tritonforge_cache_entries"] == {"kind": "untyped", "delta": 7, "after": 7}
    assert d["models"] == {
        "ensemble": {
            "requests": 20,
            "exec_count": 0.0,
            "avg_queue_us": 100.0,
            "avg_compute_infer_us": 1000.0,
            "avg_request_us": 1100.0,
        }
    }
    assert prom.diff(None, prom.parse(PROM_AFTER), "ensemble") == {"available": False}
    assert prom.scrape("http://127.0.0.1:9/metrics", timeout=0.5) is None


# ------------------------------------------------------------------------------------------ SSE


class _FakeResponse:
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.lines = body.splitlines(keepends=True)
        self.body = body

    def readline(self) -> bytes:
        return self.lines.pop(0) if self.lines else b""

    def read(self) -> bytes:
        return self.body


def _post(status: int, body: bytes):
    return lambda path, payload: _FakeResponse(status, body)


def test_sse_stream_parsing() -> None:
    body = b"".join(
        b'data: {"text_output": "%s", "num_output_tokens": 1, "cache_status": "miss"}\n\n' % w
        for w in (b" a", b" b", b" c")
    )
    out = protocols.http_request(_post(200, body), "ensemble", {"prompt": "p", "max_tokens": 3}, True)
    assert (
        out.ok
        and out.text == " a b c"
        and out.server_tokens == 3
        and out.chunks == 3
        and out.cache_status == "miss"
    )
    assert out.ttft_s is not None and out.ttft_s <= out.e2e_s


def test_sse_errors_are_classified() -> None:
    item = {"prompt": "p", "max_tokens": 3}
    mid = b'data: {"text_output": " a", "num_output_tokens": 1}\n\ndata: {"error": "engine died"}\n\n'
    out = protocols.http_request(_post(200, mid), "m", item, True)
    assert out.error_type == "server_error" and "engine died" in out.error
    out = protocols.http_request(_post(400, b'{"error": "bad input"}'), "m", item, True)
    assert (out.error_type, out.error) == ("http_400", "bad input")
    assert (
        protocols.http_request(_post(200, b"data: {not json\n\n"), "m", item, True).error_type == "protocol"
    )
    assert protocols.http_request(_post(200, b""), "m", item, True).error_type == "empty_response"

    def refused(path: str, body: bytes):
        raise ConnectionRefusedError(111, "Connection refused")

    assert protocols.http_request(refused, "m", item, True).error_type == "connection"


def test_payload() -> None:
    item = {"prompt": "hi", "max_tokens": 8, "min_tokens": 8, "inputs": {"temperature": 0.5}}
    assert protocols.build_payload(item, True) == {
        "text_input": "hi",
        "max_tokens": 8,
        "min_tokens": 8,
        "temperature": 0.5,
        "stream": True,
    }
    req = protocols.grpc_request("ensemble", "7", {**item, "inputs": {"seed": 3}}, True)
    assert req.id == "7" and {t.name: t.datatype for t in req.inputs} == {
        "text_input": "BYTES",
        "max_tokens": "INT32",
        "min_tokens": "INT32",
        "seed": "UINT64",
        "stream": "BOOL",
    }


# ------------------------------------------------------------------------------------------ workload


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> workload.TokenizerAdapter:
    """A small byte-level BPE tokenizer trained in a second (no model download, no torch)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from tritonforge.loadtest.corpus import CORPUS

    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(
        [CORPUS] * 3,
        trainers.BpeTrainer(
            vocab_size=600, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    t.save(str(path))
    return workload.load_tokenizer(str(path))


def test_workload_lengths_and_determinism(tok: workload.TokenizerAdapter) -> None:
    spec = workload.parse_workload("isl=40,osl=12,prompts=60")
    items = workload.generate(spec, tok, seed=1)
    assert items == workload.generate(spec, tok, seed=1) and items != workload.generate(spec, tok, seed=2)
    assert all(it["input_tokens"] == len(tok.encode(it["prompt"])) for it in items)
    assert sum(it["input_tokens"] == 40 for it in items) >= 55  # exact, but for rare edge merges
    assert all(it["max_tokens"] == it["min_tokens"] == 12 for it in items)
    varied = workload.generate(
        workload.parse_workload("isl=40,isl_std=10,osl=12,osl_std=3,fixed_output=false,prompts=200"), tok, 0
    )
    assert len({it["input_tokens"] for it in varied}) > 10 and all(it["min_tokens"] is None for it in varied)
    mean = sum(it["input_tokens"] for it in varied) / len(varied)
    assert 36 < mean < 44


def test_workload_repeats_paraphrases_prefixes(tok: workload.TokenizerAdapter) -> None:
    items = workload.generate(
        workload.parse_workload("isl=20,prompts=400,repeat=0.25,paraphrase=0.15"), tok, 5
    )
    kinds = [it["kind"] for it in items]
    assert 70 < kinds.count("repeat") < 130 and 35 < kinds.count("paraphrase") < 90
    by_index = {it["index"]: it for it in items}
    for it in items:
        if it["kind"] == "repeat":
            assert it["prompt"] == by_index[it["source"]]["prompt"] and it["source"] < it["index"]
        if it["kind"] == "paraphrase":
            assert it["prompt"] != by_index[it["source"]]["prompt"]
    shared = workload.generate(workload.parse_workload("isl=10,prefix=30,prefix_groups=2,prompts=20"), tok, 1)
    prefixes = {it["prompt"][:60] for it in shared}
    assert len(prefixes) == 2 and all(it["kind"] == "prefix" for it in shared)


def test_workload_trace(tmp_path: Path, tok: workload.TokenizerAdapter) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text(
        '{"prompt": "hello there", "max_tokens": 5}\n\n{"text_input": "x", "output_tokens": 2, "inputs": {"top_k": 1}}\n'
    )
    items = workload.generate(workload.parse_workload(f"trace={p}"), tok, 0)
    assert [(i["prompt"], i["max_tokens"], i["kind"]) for i in items] == [
        ("hello there", 5, "trace"),
        ("x", 2, "trace"),
    ]
    assert items[1]["inputs"] == {"top_k": 1} and items[0]["input_tokens"] == len(tok.encode("hello there"))
    assert workload.parse_workload(str(p)).trace == str(p)  # a bare path is a trace


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json}\n", "line 1 is not JSON"),
        ('["a"]\n', "not a JSON object"),
        ('{"max_tokens": 3}\n', "no string `prompt`"),
        ('{"prompt": "a", "max_tokens": 0}\n', "positive integer"),
        ("\n\n", "no requests"),
    ],
)
def test_malformed_trace(tmp_path: Path, content: str, needle: str) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(UserError) as e:
        workload.generate(workload.parse_workload(f"trace={p}"), None, 0)
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "bad", ["isl=0", "repeat=0.8,paraphrase=0.5", "bogus=1", "isl=ten", "prefix_groups=0"]
)
def test_bad_workload(bad: str) -> None:
    with pytest.raises(UserError):
        workload.parse_workload(bad)


def test_tokenizer_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError):
        workload.load_tokenizer(str(tmp_path / "nope"))
    with pytest.raises(UserError):
        workload.load_tokenizer(str(tmp_path))  # a directory without a tokenizer


# ------------------------------------------------------------------------------------------ cost


def test_cost_from_catalog_and_override() -> None:
    c = cost.cost_section(1000.0, "H100-SXM")
    assert c["price_source"] == "planner GPU catalog" and c["cost_per_1m_output_tokens"] > 0
    assert c["cost_per_1m_output_tokens"] == pytest.approx(c["price_per_gpu_hour"] / 3.6, rel=1e-4)
    o = cost.cost_section(1000.0, "H100-SXM", gpu_count=2, price_override=3.6)
    assert o["cost_per_1m_output_tokens"] == pytest.approx(2.0) and o["price_source"] == "--gpu-price"
    assert "note" in cost.cost_section(1000.0, None)
    with pytest.raises(UserError):
        cost.cost_section(1000.0, "Z999")


def test_roofline_from_planner() -> None:
    from tritonforge.builder.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parent.parent / "examples" / "llama3.1-8b-fp8-h100.yaml")
    r = cost.roofline_section(10_000.0, 64, 128, 128, "H100-SXM", spec)
    assert r["roofline_decode_tokens_per_s"] > 10_000 and 0 < r["fraction_of_roofline"] < 1
    assert "note" in cost.roofline_section(10_000.0, 64, 128, 128, "H100-SXM", None)


# ------------------------------------------------------------------------------------------ report


def test_svg_charts_are_valid_xml() -> None:
    charts = [
        svg.histogram([1, 2, 2, 3, 100], "TTFT", "ms"),
        svg.histogram([], "empty", "ms"),
        svg.lines([("a", [(1, 10), (2, 20), (4, 25)]), ("b", [(1, 5)])], "T", "x", "y"),
        svg.scatter([("E2E", [(0.1, 5), (0.2, 7)])], "S", "s", "ms"),
    ]
    for c in charts:
        root = ET.fromstring(c)
        assert root.tag.endswith("svg")
    assert svg.nice_ticks(0, 2760)[-1] >= 2760 and svg.nice_ticks(5, 5)[0] < 5 < svg.nice_ticks(5, 5)[-1]


def test_html_report_is_self_contained() -> None:
    recs = [_rec(i, 100 + i * 0.1, 0.01 * (i % 5 + 1), 0.2 + 0.01 * i, 16) for i in range(50)]
    m = metrics.level_metrics(recs)
    report = {
        "schema": "tritonforge.loadtest/1",
        "created": "now",
        "metric_definitions": metrics.DEFINITIONS,
        "config": {
            "model": "ensemble",
            "url": "http://x",
            "protocol": "http-stream",
            "duration_s": 5,
            "repeat": 1,
        },
        "environment": {"triton": {"version": "2.51.0"}, "model": {"name": "ensemble"}},
        "levels": [
            {
                "label": "c=2",
                "mode": "concurrency",
                "value": 2,
                "metrics": m,
                "cost": {},
                "roofline": {},
                "server_metrics": {"available": False},
                "load_generator": {"saturated": False, "runs": []},
            }
        ],
        "notes": ["a <note>"],
        "errors": {"count": 0},
        "token_check": {},
    }
    html = render_html(report, recs)
    assert (
        html.count("<svg") == 5
        and "<script" not in html
        and "http://cdn" not in html
        and "a &lt;note&gt;" in html
    )
    text = summary_table(report)
    assert "c=2" in text and "TTFT p50" in text
    json.dumps(report)


def test_grpc_raw_output_decoding() -> None:
    from tritonclient.grpc import service_pb2

    resp = service_pb2.ModelInferResponse(id="3")
    for name, dt in (("text_output", "BYTES"), ("num_output_tokens", "INT32")):
        o = resp.outputs.add()
        o.name, o.datatype = name, dt
        o.shape.append(1)
    resp.raw_output_contents.extend(
        [len(b" h\xc3\xa9").to_bytes(4, "little") + b" h\xc3\xa9", (7).to_bytes(4, "little")]
    )
    resp.parameters["triton_final_response"].bool_param = True
    outputs, final = protocols.grpc_outputs(resp)
    assert final and outputs == {"text_output": [b" h\xc3\xa9"], "num_output_tokens": [7]}
    acc = protocols.Accumulator(True)
    acc.add(outputs)
    out = acc.finish()
    assert out.text == " hé" and out.server_tokens == 7 and out.ok


# ------------------------------------------------------------------------------------------ runner parts


def test_derived_urls() -> None:
    from tritonforge.loadtest.runner import derived_url

    assert derived_url("http://127.0.0.1:8000", 2) == "http://127.0.0.1:8002"
    assert derived_url("http://10.0.0.5:9000", 1, None) == "10.0.0.5:9001"
    assert derived_url("http://host", 2) == "http://host:8002"


def test_saturation_flags() -> None:
    from tritonforge.loadtest.runner import Level, generator_stats

    busy = [{"process": "h:1", "cpu_percent": [95.0, 99.0, 97.0], "loop_lag_ms_p99": 80.0}]
    g = generator_stats(busy, Level("concurrency", 8), {}, workers=0)
    assert g["saturated"] and "CPU" in g["reasons"][0] and "lag" in g["warnings"][0]
    calm = [{"process": "h:1", "cpu_percent": [20.0, 30.0], "loop_lag_ms_p99": 2.0}]
    assert not generator_stats(calm, Level("concurrency", 8), {}, workers=0)["saturated"]
    behind = generator_stats(
        calm,
        Level("rate", 100),
        {"sent_per_s": 70.0, "requests": 700, "send_lag_ms": {"p90": 5.0}},
        workers=0,
    )
    assert behind["saturated"] and "scheduled 100" in behind["reasons"][0]
    noise = generator_stats(
        calm, Level("rate", 10), {"sent_per_s": 8.8, "requests": 88, "send_lag_ms": {"p90": 5.0}}, workers=0
    )
    assert not noise["saturated"]  # 88 arrivals where 100 were expected is Poisson noise
    late = generator_stats(
        calm,
        Level("rate", 10),
        {"sent_per_s": 10.0, "requests": 100, "send_lag_ms": {"p90": 80.0}},
        workers=0,
    )
    assert late["saturated"] and "after their scheduled time" in late["reasons"][0]


def test_repo_fingerprint(tmp_path: Path) -> None:
    from tritonforge.loadtest.fingerprint import repo_info

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "tritonforge.lock.json").write_text(
        json.dumps({"spec_name": "demo", "spec_hash": "abc", "spec": {"name": "demo"}})
    )
    build = tmp_path / "build"
    build.mkdir()
    (build / "build_manifest.json").write_text("{}")
    info, spec = repo_info(str(repo), str(build))
    assert (
        info["spec_hash"] == "abc"
        and len(info["lock_sha256"]) == 64
        and len(info["engine_manifest_sha256"]) == 64
    )
    assert spec == {"name": "demo"}
    with pytest.raises(UserError):
        repo_info(str(tmp_path), None)


def test_compare_warns_about_different_setups() -> None:
    a, b = _report(1000, 100), _report(1000, 100)
    a["config"] = {"model": "ensemble", "protocol": "http-stream", "workload": {"isl": 128, "osl": 64}}
    b["config"] = {"model": "ensemble", "protocol": "grpc-stream", "workload": {"isl": 128, "osl": 32}}
    warnings = compare.compare_reports(a, b)["warnings"]
    assert warnings == ["protocol differs: 'http-stream' vs 'grpc-stream'", "workload osl differs: 64 vs 32"]
    assert "warning: protocol differs" in compare.format_comparison(compare.compare_reports(a, b))


# ------------------------------------------------------------------------------------------ honest workloads


def test_default_workload_sends_no_duplicate_prompt(tok: workload.TokenizerAdapter) -> None:
    spec = workload.parse_workload("repeat=0")  # the default item count (1000) and lengths
    items = workload.generate(spec, tok, seed=0)
    prompts = [it["prompt"] for it in items]
    assert len(prompts) == spec.prompts == 1000 and len(set(prompts)) == len(prompts)
    # no two prompts share their first 8 tokens, so none shares a KV-cache block (16+ tokens) with another
    ids = [tok.encode(p) for p in prompts]
    assert len({tuple(x[:8]) for x in ids}) == len(prompts)
    # token counts stay exact: input_tokens is the tokenizer's count, and nearly always the asked-for isl
    assert all(it["input_tokens"] == len(x) for it, x in zip(items, ids, strict=True))
    assert sum(it["input_tokens"] == spec.isl for it in items) >= 0.95 * len(items)


def test_only_repeat_items_repeat_a_prompt(tok: workload.TokenizerAdapter) -> None:
    items = workload.generate(workload.parse_workload("isl=24,prompts=500,repeat=0.2,paraphrase=0.2"), tok, 3)
    others = [it["prompt"] for it in items if it["kind"] != "repeat"]
    assert len(set(others)) == len(others)
    assert len({it["prompt"] for it in items}) == len(others)  # repeats add no new prompt
    with pytest.raises(UserError) as e:
        workload.check_distinct(
            [{"prompt": "same", "kind": "synthetic"}, {"prompt": "same", "kind": "prefix"}]
        )
    assert "1 duplicate prompts" in str(e.value) and "\n" not in str(e.value)
    workload.check_distinct([{"prompt": "same", "kind": "synthetic"}, {"prompt": "same", "kind": "repeat"}])


def test_warmup_prompts_are_disjoint_from_measured(tok: workload.TokenizerAdapter, tmp_path: Path) -> None:
    spec = workload.parse_workload("isl=32,osl=8")
    items = workload.generate(spec, tok, seed=0)
    warm, measured = workload.warmup_split(spec, tok, 0, 8, items)
    assert measured == items and len(warm) == 8
    assert not {w["prompt"] for w in warm} & {m["prompt"] for m in measured}
    assert all(w["input_tokens"] == len(tok.encode(w["prompt"])) for w in warm)
    # a trace warms up with its first lines, which are then not measured
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        "".join(json.dumps({"prompt": f"question number {i}", "max_tokens": 4}) + "\n" for i in range(12))
    )
    tspec = workload.parse_workload(f"trace={trace}")
    titems = workload.generate(tspec, tok, 0)
    twarm, tmeasured = workload.warmup_split(tspec, tok, 0, 8, titems)
    assert [w["index"] for w in twarm] == list(range(8)) and [m["index"] for m in tmeasured] == list(
        range(8, 12)
    )
    assert not {w["prompt"] for w in twarm} & {m["prompt"] for m in tmeasured}
    # a trace too short for that warms up with synthetic prompts instead, and measures every line
    swarm, smeasured = workload.warmup_split(tspec, tok, 0, 20, titems)
    assert smeasured == titems and len(swarm) == 20 and all(w["kind"] == "synthetic" for w in swarm)
    assert not {w["prompt"] for w in swarm} & {m["prompt"] for m in smeasured}
    assert workload.warmup_split(spec, tok, 0, 0, items) == ([], items)


def test_prompt_reuse_counts_resent_prompts() -> None:
    from tritonforge.loadtest.runner import prompt_reuse

    prompt_of = {0: "a", 1: "b", 2: "c"}
    sent = {"w"}  # the warm-up prompt
    recs = [RequestRecord(id=str(i), start=float(i), item=item) for i, item in enumerate([0, 1, 0, 2])]
    first = prompt_reuse(recs, prompt_of, sent, 0.0, "tf_cpu_engine_reused_blocks")
    assert first == {
        "requests": 4,
        "distinct_prompts": 3,
        "repeated_requests": 1,
        "kv_reused_blocks": 0.0,
        "kv_metric": "tf_cpu_engine_reused_blocks",
    }
    again = prompt_reuse(recs[:2], prompt_of, sent)  # a later run re-sending the same items
    assert again["repeated_requests"] == 2 and again["kv_reused_blocks"] is None


KV_BEFORE = """# TYPE tf_cpu_engine_reused_blocks gauge
tf_cpu_engine_reused_blocks{model="tensorrt_llm"} 10
"""
TRTLLM_BEFORE = """# TYPE nv_trt_llm_kv_cache_block_metrics gauge
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="used",model="tensorrt_llm",version="1"} 50
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="reused",model="tensorrt_llm",version="1"} 7
"""


def test_kv_reused_blocks_from_triton_metrics() -> None:
    cpu = prom.kv_reused_blocks(prom.parse(KV_BEFORE), prom.parse(KV_BEFORE.replace("} 10", "} 14")))
    assert cpu == (4.0, "tf_cpu_engine_reused_blocks")
    trt = prom.kv_reused_blocks(
        prom.parse(TRTLLM_BEFORE), prom.parse(TRTLLM_BEFORE.replace("} 7", "} 9").replace("} 50", "} 80"))
    )
    assert trt == (2.0, "nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=reused}")
    assert prom.kv_reused_blocks(prom.parse(PROM_BEFORE), prom.parse(PROM_AFTER)) == (None, None)
    assert prom.kv_reused_blocks(None, prom.parse(KV_BEFORE)) == (None, None)


def test_runs_continue_the_workload_instead_of_restarting_it(tmp_path: Path) -> None:
    from tritonforge.loadtest.runner import Level, LoadTestConfig, locust_commands

    cfg = LoadTestConfig(url="http://127.0.0.1:8000", model="ensemble", output=tmp_path)
    main, _ = locust_commands(
        cfg, Level("concurrency", 2), 1, tmp_path / "w.jsonl", tmp_path, tmp_path, item_offset=137
    )
    assert main[main.index("--item-offset") + 1] == "137"


# ------------------------------------------------------------------------------------------ typed report

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "loadtest_reports"


def _extras(model: object, path: str = "report") -> list[str]:
    """Keys of a typed report that no model declares (each should be typed)."""
    from pydantic import BaseModel

    out: list[str] = []
    if isinstance(model, BaseModel):
        out += [f"{path}.{k}" for k in model.model_extra or {}]
        for name in model.model_fields_set:
            out += _extras(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, list):
        for i, x in enumerate(model):
            out += _extras(x, f"{path}[{i}]")
    elif isinstance(model, dict):
        for k, x in model.items():
            out += _extras(x, f"{path}.{k}")
    return out


@pytest.mark.parametrize("name", ["sweep_repeats_v1.json", "with_comparison_v1.json"])
def test_old_reports_load_typed_and_write_back_unchanged(name: str) -> None:
    """Reports written by the untyped code before the typed models: same bytes out, every key typed."""
    from tritonforge.loadtest.models import LevelMetrics, Report, Stats

    text = (FIXTURES / name).read_text()
    report = compare.load_report(FIXTURES / name)
    assert isinstance(report, Report) and report.to_json() == text
    assert _extras(report) == []
    level = report.levels[-1]
    assert isinstance(level.metrics, LevelMetrics) and isinstance(level.metrics.ttft_ms, Stats)
    assert level.metrics.ttft_ms.p50 == json.loads(text)["levels"][-1]["metrics"]["ttft_ms"]["p50"]


def test_compare_reads_old_reports(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tritonforge.loadtest.cli import loadtest_group

    old = FIXTURES / "sweep_repeats_v1.json"
    result = compare.compare_reports(compare.load_report(old), compare.load_report(old))
    assert not result["regression"] and result["compared"] > 10 and result["missing_levels"] == []
    # a slower copy of the old report is caught, through the CLI as users run it
    data = json.loads(old.read_text())
    for lv in data["levels"]:
        lv["metrics"]["output_tokens_per_s"] /= 2
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps(data))
    run = CliRunner().invoke(loadtest_group, ["compare", str(old), str(slow)])
    assert run.exit_code == 1 and "REGRESSION" in run.output and "output_tokens_per_s" in run.output
    same = CliRunner().invoke(
        loadtest_group, ["compare", str(old), str(FIXTURES / "with_comparison_v1.json")]
    )
    assert same.exit_code in (0, 1) and "c=2" in same.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "tritonforge.loadtest/1", "levels": [{"label": 3, "metrics": {}}]}))
    with pytest.raises(UserError) as e:
        compare.load_report(bad)
    assert "levels.0.label" in str(e.value) and "\n" not in str(e.value)


def test_typed_report_from_runner_parts(tmp_path: Path) -> None:
    """The runner's typed level entry and report serialize to the report.json shape (and new reuse figures)."""
    from tritonforge.loadtest import runner
    from tritonforge.loadtest.models import Report
    from tritonforge.loadtest.report import summary_table, write_reports

    cfg = runner.LoadTestConfig(url="http://x", model="ensemble", output=tmp_path, gpu="H100-SXM")
    recs = [_rec(i, 100 + i * 0.1, 0.01, 0.2, 16, item=i) for i in range(20)]
    runs, sent = [], set()
    for _ in range(2):
        m = metrics.level_metrics(recs)
        m["token_check"] = metrics.token_check(recs)
        m["prompt_reuse"] = runner.prompt_reuse(
            recs, {i: f"p{i}" for i in range(20)}, sent, 3.0, "tf_cpu_engine_reused_blocks"
        )
        m["wall_s"] = 2.0
        runs.append(m)
    gens = [
        runner.generator_stats(
            [{"process": "h:1", "cpu_percent": [10.0]}], runner.Level("concurrency", 2), runs[0], 0
        )
    ]
    level = runner._level_entry(
        cfg, runner.Level("concurrency", 2), runs, [{"available": False}] * 2, gens * 2, None
    )
    d = level.to_dict()
    assert list(d) == [
        "label",
        "mode",
        "value",
        "metrics",
        "runs",
        "server_metrics",
        "load_generator",
        "cost",
        "roofline",
    ]
    assert (
        d["server_metrics"] == {"runs": [{"available": False}, {"available": False}]}
        and d["metrics"]["repeats"] == 2
    )
    assert d["cost"]["price_source"] == "planner GPU catalog" and "note" in d["roofline"]
    assert (
        d["metrics"]["prompt_reuse"]["repeated_requests"] == 10
    )  # median of 0 and 20: run 2 re-sent run 1's prompts
    pre = {"server": {"version": "2.51.0"}, "model_config": {}, "model_metadata": {}}
    report = runner._report(
        cfg,
        pre,
        {},
        None,
        [
            {"index": i, "prompt": f"p{i}", "kind": "synthetic", "input_tokens": 4, "max_tokens": 16}
            for i in range(20)
        ],
        [],
        None,
        [level],
        recs,
        [],
        "http://x:8002/metrics",
    )
    report.summary.prompt_reuse = runner._total_reuse([level], 20)
    out = report.to_dict()
    assert list(out) == [
        "schema",
        "created",
        "metric_definitions",
        "config",
        "environment",
        "workload",
        "levels",
        "summary",
        "token_check",
        "errors",
        "notes",
    ]
    assert out["summary"]["prompt_reuse"] == {
        "requests": 40,
        "distinct_prompts": 20,
        "repeated_requests": 20,
        "kv_reused_blocks": 6.0,
        "kv_metric": "tf_cpu_engine_reused_blocks",
    }
    assert out["workload"]["distinct_prompts"] == 20 and out["workload"]["warmup_items"] == 0
    assert Report.from_dict(json.loads(json.dumps(out))).to_dict() == json.loads(json.dumps(out))
    assert "prompt reuse: 20 of 40 measured requests" in summary_table(report)
    paths = write_reports(report, recs, tmp_path / "rep")
    assert compare.load_report(paths["json"]).to_dict() == json.loads(paths["json"].read_text())


def test_runner_uses_only_public_cost_functions() -> None:
    from tritonforge.builder.spec import load_spec
    from tritonforge.loadtest import runner

    assert "cost._" not in Path(runner.__file__).read_text()
    spec = load_spec(Path(__file__).resolve().parent.parent / "examples" / "llama3.1-8b-fp8-h100.yaml")
    assert cost.tier_runtime(spec, None) == "trtllm-engine" and cost.tier_runtime(None, None) is None
    assert not cost.on_cpu(spec, None)
