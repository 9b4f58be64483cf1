"""Reports: report.json, requests.csv, a self-contained report.html (inline SVG, no scripts) and
the summary table printed at the end of a run."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from tritonforge.loadtest import predicted, svg
from tritonforge.loadtest.models import Report, as_dict
from tritonforge.loadtest.records import RequestRecord, write_csv

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.bad{color:#b00020;font-weight:600}.good{color:#137333}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #e3e3e3;background:#fff}
.chart .title{font-size:14px;font-weight:600}.chart .label{font-size:12px}.chart .tick{font-size:11px;fill:#444}
.chart .axis{stroke:#333}.chart .grid{stroke:#eee}pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;margin:6px 0}
"""


def write_reports(
    report: Report | dict[str, Any], records: list[RequestRecord], out: Path
) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "csv": out / "requests.csv", "html": out / "report.html"}
    report = as_dict(report)
    paths["json"].write_text(
        json.dumps(report, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8"
    )
    write_csv(records, paths["csv"])
    paths["html"].write_text(render_html(report, records), encoding="utf-8")
    return paths


# ------------------------------------------------------------------------------------------ text


def _g(d: dict[str, Any] | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _n(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


SUMMARY_COLUMNS = (
    ("level", lambda lv: lv["label"]),
    ("ok", lambda lv: _n(_g(lv, "metrics", "completed"))),
    ("fail", lambda lv: _n(_g(lv, "metrics", "failed"))),
    ("req/s", lambda lv: _n(_g(lv, "metrics", "requests_per_s"), 2)),
    ("out tok/s", lambda lv: _n(_g(lv, "metrics", "output_tokens_per_s"), 1)),
    (
        "goodput/s",
        lambda lv: _n(_g(lv, "metrics", "goodput_requests_per_s"), 2) if _g(lv, "metrics", "slo") else "-",
    ),
    ("TTFT p50", lambda lv: _n(_g(lv, "metrics", "ttft_ms", "p50"))),
    ("TTFT p99", lambda lv: _n(_g(lv, "metrics", "ttft_ms", "p99"))),
    ("ITL p50", lambda lv: _n(_g(lv, "metrics", "itl_ms", "p50"), 2)),
    ("ITL p99", lambda lv: _n(_g(lv, "metrics", "itl_ms", "p99"), 2)),
    ("E2E p50", lambda lv: _n(_g(lv, "metrics", "e2e_ms", "p50"))),
    ("E2E p99", lambda lv: _n(_g(lv, "metrics", "e2e_ms", "p99"))),
    ("$/1M tok", lambda lv: _n(_g(lv, "cost", "cost_per_1m_output_tokens"), 4)),
    ("gen sat.", lambda lv: "YES" if _g(lv, "load_generator", "saturated") else "no"),
)


def reuse_line(report: dict[str, Any]) -> str | None:
    """One line: measured requests that re-sent a prompt, and the KV blocks the server reused."""
    pr = _g(report, "summary", "prompt_reuse")
    if not pr:
        return None
    kv = (
        f"the server's KV cache reused {_n(pr.get('kv_reused_blocks'), 0)} blocks ({pr.get('kv_metric')})"
        if pr.get("kv_reused_blocks") is not None
        else "the server exports no KV-cache reuse metric"
    )
    return (
        f"prompt reuse: {_n(pr.get('repeated_requests'))} of {_n(pr.get('requests'))} measured requests re-sent an "
        f"earlier prompt ({_n(pr.get('distinct_prompts'))} distinct prompts); {kv}"
    )


def summary_table(report: Report | dict[str, Any]) -> str:
    """The per-level summary (latencies in ms) as aligned text."""
    report = as_dict(report)
    head = [c for c, _ in SUMMARY_COLUMNS]
    rows = [[f(lv) for _, f in SUMMARY_COLUMNS] for lv in report.get("levels", [])]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    env = report.get("environment", {})
    title = (
        f"{env.get('model', {}).get('name') or report['config']['model']} via {report['config']['protocol']} "
        f"on Triton {_g(env, 'triton', 'version') or '?'} (latencies in ms)"
    )
    out = [title, *lines]
    pred = predicted.table(report)
    if pred:
        out.append(pred)
    reuse = reuse_line(report)
    if reuse:
        out.append(reuse)
    for note in report.get("notes", []):
        out.append(f"note: {note}")
    for lv in report.get("levels", []):
        for r in _g(lv, "load_generator", "reasons") or []:
            out.append(f"load generator saturated at {lv['label']}: {r}")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ HTML


def _table(head: list[str], rows: list[list[Any]], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{escape(str(h))}</th>' for i, h in enumerate(head))
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"l" if i < left else ""}">{c if str(c).startswith("<span") else escape(str(c))}</td>'
            for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _stats_rows(levels: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for lv in levels:
        m = lv["metrics"]
        for key, name in (
            ("ttft_ms", "TTFT ms"),
            ("itl_ms", "ITL ms"),
            ("e2e_ms", "E2E ms"),
            ("output_tokens_per_request", "output tokens"),
            ("input_tokens_per_request", "input tokens"),
        ):
            s = m.get(key) or {}
            if not s.get("count"):
                continue
            rows.append(
                [
                    lv["label"],
                    name,
                    s.get("count"),
                    *(_n(s.get(k), 2) for k in ("avg", "min", "max", "p50", "p90", "p99")),
                ]
            )
    return rows


def _charts(report: dict[str, Any], records: list[RequestRecord]) -> list[str]:
    levels = report.get("levels", [])
    measured = [r for r in records if not r.warmup and r.ok]
    charts = [
        svg.histogram(
            [r.ttft_s * 1000 for r in measured if r.ttft_s is not None],
            "TTFT distribution (all levels)",
            "ms",
        ),
        svg.histogram(
            [r.itl_s * 1000 for r in measured if r.itl_s is not None], "ITL distribution (all levels)", "ms"
        ),
    ]
    conc = [lv for lv in levels if lv["mode"] == "concurrency"]
    xs_key = "concurrency (users)" if conc else "request rate (req/s)"
    pts = conc or levels
    charts.append(
        svg.lines(
            [
                (
                    "output tokens/s",
                    [(lv["value"], lv["metrics"].get("output_tokens_per_s") or 0) for lv in pts],
                )
            ],
            f"Throughput vs {xs_key.split(' ')[0]}",
            xs_key,
            "output tokens/s",
        )
    )
    curve = []
    for key, name in (("ttft_ms", "TTFT p50"), ("e2e_ms", "E2E p50")):
        s = [((lv["metrics"].get("output_tokens_per_s") or 0), _g(lv, "metrics", key, "p50")) for lv in pts]
        if all(y is not None for _, y in s) and s:
            curve.append((name, s))  # in load order, so the curve bends back where throughput saturates
    charts.append(
        svg.lines(
            curve,
            "Latency vs throughput (per load level)",
            "output tokens/s",
            "ms",
            labels=[lv["label"] for lv in pts],
        )
    )
    series_t, series_e = [], []
    if measured:
        by_level: dict[str, list[RequestRecord]] = {}
        for r in measured:
            by_level.setdefault(f"{r.level}/{r.repeat}", []).append(r)
        offset = 0.0
        for recs in by_level.values():  # levels laid end to end on one time axis
            t0 = min(r.start for r in recs)
            series_t += [(offset + r.start - t0, r.ttft_s * 1000) for r in recs if r.ttft_s is not None]
            series_e += [(offset + r.start - t0, (r.e2e_s or 0) * 1000) for r in recs]
            offset += max(r.end for r in recs) - t0
    charts.append(
        svg.scatter(
            [("E2E", series_e), ("TTFT", series_t)],
            "Latency over time (levels end to end)",
            "seconds since level start",
            "ms",
        )
    )
    return charts


def _prediction_html(report: dict[str, Any]) -> list[str]:
    levels = report.get("levels", [])
    preds = [(lv, lv.get("prediction") or {}) for lv in levels]
    if not any(p for _, p in preds):
        return []
    out = ["<h2>Predicted vs measured</h2>"]
    gate = report.get("prediction_check")
    if gate:
        verdict = (
            f"<span class='bad'>{len(gate.get('failures', []))} metric(s) below {gate['min_of_prediction']:.0%} of "
            "the prediction</span>"
            if gate.get("failed")
            else f"<span class='good'>all at or above {gate['min_of_prediction']:.0%} of the prediction</span>"
        )
        out.append(f"<p>Check: {verdict}</p>")
        out += [f"<div class='note'>{escape(f)}</div>" for f in gate.get("failures", [])]
    src = {p["source"] for _, p in preds if p.get("source")}
    if src:
        out.append(
            f"<p>Prediction: {escape('; '.join(sorted(src)))}. Means compared; <i>of prediction</i> is "
            "measured/predicted for throughput and predicted/measured for latencies.</p>"
        )
    for note in sorted({p["note"] for _, p in preds if p.get("note")}):
        out.append(f"<div class='note'>{escape(note)}</div>")
    rows = [
        [
            lv["label"],
            r["metric"],
            _n(r.get("predicted"), 2),
            _n(r.get("measured"), 2),
            _n(r.get("ratio"), 3),
            "-" if r.get("of_prediction") is None else f"{r['of_prediction']:.0%}",
        ]
        for lv, p in preds
        for r in p.get("rows") or []
    ]
    if rows:
        out.append(
            _table(
                ["level", "metric", "predicted", "measured", "measured / predicted", "of prediction"],
                rows,
                left=2,
            )
        )
    return out


def render_html(report: Report | dict[str, Any], records: list[RequestRecord]) -> str:
    report = as_dict(report)
    cfg, env = report.get("config", {}), report.get("environment", {})
    levels = report.get("levels", [])
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>tritonforge load test: {escape(str(cfg.get('model')))}</title><style>{CSS}</style></head><body>",
        f"<h1>Load test: {escape(str(cfg.get('model')))} at {escape(str(cfg.get('url')))}</h1>",
        f"<p>{escape(report.get('created', ''))} &middot; protocol {escape(str(cfg.get('protocol')))} &middot; Triton "
        f"{escape(str(_g(env, 'triton', 'version')))} &middot; tritonforge {escape(str(env.get('tritonforge_version')))} "
        f"&middot; {cfg.get('duration_s')} s per level &times; {cfg.get('repeat')} repeat(s)</p>",
    ]
    reuse = reuse_line(report)
    if reuse:
        parts.append(f"<p>{escape(reuse)}</p>")
    for note in report.get("notes", []):
        parts.append(f"<div class='note'>{escape(note)}</div>")
    comp = report.get("comparison")
    if comp:
        verdict = (
            "<span class='bad'>REGRESSION</span>"
            if comp.get("regression")
            else "<span class='good'>no regression</span>"
        )
        parts.append(f"<h2>Against baseline {escape(str(comp.get('baseline')))}: {verdict}</h2>")
        for w in comp.get("warnings", []):
            parts.append(f"<div class='note'>set-up {escape(w)}</div>")
        parts.append(
            _table(
                ["level", "metric", "baseline", "current", "ratio", "tolerance", "verdict"],
                [
                    [
                        r["level"],
                        r["metric"],
                        _n(r["baseline"], 3),
                        _n(r["current"], 3),
                        _n(r.get("ratio"), 3),
                        r["tolerance"],
                        f"<span class='bad'>{r['verdict']}</span>"
                        if r["verdict"] == "REGRESSION"
                        else r["verdict"],
                    ]
                    for r in comp.get("rows", [])
                ],
                left=2,
            )
        )
    parts.append("<h2>Summary</h2>")
    parts.append(
        _table([c for c, _ in SUMMARY_COLUMNS], [[f(lv) for _, f in SUMMARY_COLUMNS] for lv in levels])
    )
    parts.append("<p>Latencies in ms. " + escape(report.get("metric_definitions", "")) + "</p>")
    parts.extend(_prediction_html(report))
    parts.append("<h2>Charts</h2><div class='charts'>" + "".join(_charts(report, records)) + "</div>")
    parts.append("<h2>Distributions</h2>")
    parts.append(
        _table(
            ["level", "metric", "n", "avg", "min", "max", "p50", "p90", "p99"], _stats_rows(levels), left=2
        )
    )
    parts.append("<h2>Cost and efficiency</h2>")
    parts.append(
        _table(
            [
                "level",
                "GPU",
                "$/h",
                "price source",
                "$ per 1M output tokens",
                "roofline tok/s",
                "fraction of roofline",
                "note",
            ],
            [
                [
                    lv["label"],
                    _g(lv, "cost", "gpu") or "-",
                    _n(_g(lv, "cost", "dollars_per_hour"), 2),
                    _g(lv, "cost", "price_source") or "-",
                    _n(_g(lv, "cost", "cost_per_1m_output_tokens"), 4),
                    _n(_g(lv, "roofline", "roofline_decode_tokens_per_s")),
                    _n(_g(lv, "roofline", "fraction_of_roofline"), 4),
                    _g(lv, "cost", "note") or _g(lv, "roofline", "note") or "",
                ]
                for lv in levels
            ],
        )
    )
    parts.append("<h2>Server (Triton /metrics, deltas over each level)</h2>")
    rows = []
    for lv in levels:
        sm = lv.get("server_metrics") or {}
        sm = (sm.get("runs") or [sm])[0]
        if not sm.get("available"):
            rows.append([lv["label"], "not available", ""])
            continue
        for k, v in (sm.get("triton") or {}).items():
            rows.append([lv["label"], k, _n(v, 1)])
        for name, v in (sm.get("models") or {}).items():
            rows.append(
                [
                    lv["label"],
                    f"model {name}: requests / avg queue / compute / request us",
                    f"{_n(v.get('requests'), 0)} / {_n(v.get('avg_queue_us'))} / {_n(v.get('avg_compute_infer_us'))} / "
                    f"{_n(v.get('avg_request_us'))}",
                ]
            )
        for k, v in (sm.get("tritonforge") or {}).items():
            rows.append(
                [
                    lv["label"],
                    f"{k} ({v.get('kind')}, value after: {_n(v.get('after'), 3)})",
                    _n(v.get("delta"), 3),
                ]
            )
    parts.append(_table(["level", "metric", "change over the level"], rows, left=2))
    parts.append("<h2>Load generator</h2>")
    parts.append(
        _table(
            ["level", "saturated", "reasons", "warnings", "CPU % (mean per process)", "loop lag p99 ms"],
            [
                [
                    lv["label"],
                    "YES" if _g(lv, "load_generator", "saturated") else "no",
                    "; ".join(_g(lv, "load_generator", "reasons") or []),
                    "; ".join(_g(lv, "load_generator", "warnings") or []),
                    ", ".join(
                        _n(p.get("cpu_percent_mean"))
                        for run in _g(lv, "load_generator", "runs") or []
                        for p in run["processes"]
                    ),
                    ", ".join(
                        _n(p.get("loop_lag_ms_p99"))
                        for run in _g(lv, "load_generator", "runs") or []
                        for p in run["processes"]
                    ),
                ]
                for lv in levels
            ],
            left=4,
        )
    )
    errs = report.get("errors", {})
    parts.append(f"<h2>Errors ({errs.get('count', 0)})</h2>")
    if errs.get("count"):
        parts.append(_table(["type", "count"], [[k, v] for k, v in errs.get("by_type", {}).items()]))
        parts.append(
            _table(
                ["type", "message", "count"],
                [[e["type"], e["message"], e["count"]] for e in errs.get("top_messages", [])],
                left=2,
            )
        )
    tc = report.get("token_check", {})
    parts.append("<h2>Output token counts</h2>")
    parts.append(
        f"<p>Server-reported vs re-tokenised over {tc.get('compared', 0)} requests: {_n(tc.get('server_total'))} vs "
        f"{_n(tc.get('retokenized_total'))} ({_n(tc.get('requests_differing'))} requests differ).</p>"
    )
    parts.append("<h2>Environment</h2><pre>" + escape(json.dumps(env, indent=2, default=str)) + "</pre>")
    parts.append(
        "<h2>Workload</h2><pre>"
        + escape(json.dumps(report.get("workload", {}), indent=2, default=str))
        + "</pre>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)
