"""Regression gate: compare two load-test reports level by level, metric by metric.

A metric regresses when it moved in the bad direction (throughput down, latency or errors up) by
more than BOTH its relative and its absolute tolerance, as TensorRT-LLM's perf gate does: the
relative bound ignores noise on large values, the absolute one noise on tiny values. Percentiles
are gated only when both runs have enough samples to estimate them (`MIN_SAMPLES`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tritonforge.errors import UserError
from tritonforge.loadtest.models import Report, as_dict


@dataclass(frozen=True)
class Rule:
    key: str  # e.g. "ttft_ms.p50"
    higher_is_better: bool
    rel: float  # fraction of the baseline
    abs: float  # metric units (ms for latencies)


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("output_tokens_per_s", True, 0.10, 1.0),
    Rule("requests_per_s", True, 0.10, 0.05),
    Rule("goodput_requests_per_s", True, 0.10, 0.05),
    Rule("ttft_ms.p50", False, 0.20, 10.0),
    Rule("ttft_ms.p90", False, 0.20, 10.0),
    Rule("ttft_ms.p99", False, 0.50, 25.0),
    Rule("itl_ms.p50", False, 0.20, 2.0),
    Rule("itl_ms.p90", False, 0.20, 2.0),
    Rule("itl_ms.p99", False, 0.50, 5.0),
    Rule("e2e_ms.p50", False, 0.20, 20.0),
    Rule("e2e_ms.p90", False, 0.20, 20.0),
    Rule("e2e_ms.p99", False, 0.50, 50.0),
    Rule("error_rate", False, 0.0, 0.01),
)
# A percentile is gated only when both runs have enough samples to estimate it (p99 of 60 requests
# is the maximum, i.e. one scheduler hiccup); otherwise it is shown with the verdict "few samples".
MIN_SAMPLES = {"p50": 10, "p90": 50, "p99": 300}
ALIASES = {
    "ttft": "ttft_ms",
    "itl": "itl_ms",
    "e2e": "e2e_ms",
    "throughput": "output_tokens_per_s",
    "tokens_per_s": "output_tokens_per_s",
    "rps": "requests_per_s",
    "goodput": "goodput_requests_per_s",
    "errors": "error_rate",
}
_AMOUNT = re.compile(r"^\s*(-?\d+(?:\.\d*)?|\.\d+)\s*(%|ms|s|us)?\s*$")


def _amount(text: str, what: str, relative: bool) -> float:
    m = _AMOUNT.match(text)
    if not m:
        raise UserError(
            f"invalid --tolerance {what}: {text!r} is not a number (e.g. ttft=0.1:5ms or tokens_per_s=10%)"
        )
    v, unit = float(m.group(1)), m.group(2)
    if v < 0:
        raise UserError(f"invalid --tolerance {what}: tolerances must be >= 0")
    if unit == "%":
        return v / 100.0
    if relative and unit:
        raise UserError(
            f"invalid --tolerance {what}: the relative part takes a fraction or a percentage, not {unit}"
        )
    return v * {"s": 1000.0, "us": 0.001}.get(unit or "", 1.0)


def parse_tolerances(
    items: list[str] | tuple[str, ...] | None,
) -> dict[str, tuple[float | None, float | None]]:
    """['ttft=0.1:5ms', 'e2e.p99=30%', 'error_rate=:0.02'] -> {'ttft_ms': (0.1, 5.0), ...}."""
    out: dict[str, tuple[float | None, float | None]] = {}
    for item in items or ():
        for part in (p for p in item.split(",") if p.strip()):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep or not key:
                raise UserError(f"invalid --tolerance {part!r}: use metric=rel:abs, e.g. ttft=0.1:5ms")
            family, dot, pct = key.partition(".")
            family = ALIASES.get(family, family)
            key = f"{family}.{pct}" if dot else family
            if not any(r.key == key or r.key.startswith(key + ".") for r in DEFAULT_RULES):
                known = sorted({r.key.split(".")[0] for r in DEFAULT_RULES} | set(ALIASES))
                raise UserError(
                    f"invalid --tolerance {part!r}: unknown metric {key!r}; use one of {', '.join(known)}"
                )
            rel_s, _, abs_s = value.partition(":")
            rel = _amount(rel_s, part, True) if rel_s.strip() else None
            ab = _amount(abs_s, part, False) if abs_s.strip() else None
            out[key] = (rel, ab)
    return out


def rules(overrides: dict[str, tuple[float | None, float | None]] | None = None) -> list[Rule]:
    """Default rules with overrides applied (a family key like `ttft_ms` covers all its percentiles)."""
    overrides = overrides or {}
    out = []
    for r in DEFAULT_RULES:
        rel, ab = r.rel, r.abs
        for key in (r.key.split(".")[0], r.key):  # family first, then the exact key wins
            if key in overrides:
                o_rel, o_abs = overrides[key]
                rel = rel if o_rel is None else o_rel
                ab = ab if o_abs is None else o_abs
        out.append(Rule(r.key, r.higher_is_better, rel, ab))
    return out


def _value(metrics: dict[str, Any], key: str) -> float | None:
    cur: Any = metrics
    for part in key.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return float(cur) if isinstance(cur, (int, float)) and not isinstance(cur, bool) else None


def compare_reports(
    baseline: Report | dict[str, Any],
    current: Report | dict[str, Any],
    overrides: dict[str, tuple[float | None, float | None]] | None = None,
) -> dict[str, Any]:
    """Per level and metric: baseline, current, ratio, verdict; `regression` if any metric regressed."""
    baseline, current = as_dict(baseline), as_dict(current)
    base_levels = {lv["label"]: lv for lv in baseline.get("levels", [])}
    cur_levels = {lv["label"]: lv for lv in current.get("levels", [])}
    rows: list[dict[str, Any]] = []
    missing = sorted(set(base_levels) ^ set(cur_levels))
    for label in [lb for lb in cur_levels if lb in base_levels]:
        bm, cm = base_levels[label]["metrics"], cur_levels[label]["metrics"]
        for rule in rules(overrides):
            b, c = _value(bm, rule.key), _value(cm, rule.key)
            if b is None or c is None:
                continue
            if rule.key.startswith("goodput") and not (bm.get("slo") and cm.get("slo")):
                continue
            worse = (b - c) if rule.higher_is_better else (c - b)  # > 0: moved the bad way
            limit_rel = rule.rel * abs(b)
            regressed = worse > limit_rel and worse > rule.abs
            improved = -worse > limit_rel and -worse > rule.abs
            family, _, pct = rule.key.partition(".")
            n = min(_value(bm, f"{family}.count") or 0, _value(cm, f"{family}.count") or 0) if pct else None
            few = n is not None and n < MIN_SAMPLES.get(pct, 0)
            rows.append(
                {
                    "level": label,
                    "metric": rule.key,
                    "baseline": b,
                    "current": c,
                    "ratio": round(c / b, 4) if b else None,
                    "better": "higher" if rule.higher_is_better else "lower",
                    "tolerance": f"{rule.rel:.0%} and {rule.abs:g}",
                    "samples": int(n) if n is not None else None,
                    "verdict": "few samples"
                    if few and (regressed or improved)
                    else ("REGRESSION" if regressed else ("improved" if improved else "ok")),
                }
            )
    regressions = [r for r in rows if r["verdict"] == "REGRESSION"]
    return {
        "regression": bool(regressions),
        "regressions": len(regressions),
        "compared": len(rows),
        "missing_levels": missing,
        "warnings": setup_differences(baseline, current),
        "rows": rows,
    }


def setup_differences(baseline: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between the two runs' set-ups (a different workload explains a 'regression')."""
    out = []
    bc, cc = baseline.get("config") or {}, current.get("config") or {}
    for key in ("model", "protocol", "duration_s", "seed", "workers"):
        if key in bc and key in cc and bc[key] != cc[key]:
            out.append(f"{key} differs: {bc[key]!r} vs {cc[key]!r}")
    bw, cw = bc.get("workload") or {}, cc.get("workload") or {}
    for key in sorted(set(bw) | set(cw)):
        if bw.get(key) != cw.get(key):
            out.append(f"workload {key} differs: {bw.get(key)!r} vs {cw.get(key)!r}")
    bv = ((baseline.get("environment") or {}).get("triton") or {}).get("version")
    cv = ((current.get("environment") or {}).get("triton") or {}).get("version")
    if bv and cv and bv != cv:
        out.append(f"Triton version differs: {bv} vs {cv}")
    return out


def load_report(path: str | Path) -> Report:
    """A report.json (this version's or an earlier one's) as a typed `Report`."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"report {str(p)!r} not found; pass a report.json written by `tritonforge loadtest`")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except ValueError:
        raise UserError(f"{p} is not JSON; pass a report.json written by `tritonforge loadtest`") from None
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("tritonforge.loadtest/"):
        raise UserError(f"{p} is not a tritonforge load-test report (no tritonforge.loadtest schema)")
    try:
        return Report.from_dict(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise UserError(
            f"{p} is not a valid load-test report ({where}: {first['msg']}); pass a report.json written by "
            "`tritonforge loadtest`"
        ) from None


def format_comparison(result: dict[str, Any], baseline: str = "baseline", current: str = "current") -> str:
    """A text table of every compared metric, then the verdict."""
    head = ["level", "metric", baseline[-28:], current[-28:], "ratio", "tolerance", "verdict"]
    rows = [
        [
            r["level"],
            r["metric"],
            f"{r['baseline']:.3f}",
            f"{r['current']:.3f}",
            "-" if r["ratio"] is None else f"{r['ratio']:.3f}",
            r["tolerance"],
            r["verdict"],
        ]
        for r in result["rows"]
    ]
    widths = [max(len(h), *(len(x[i]) for x in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = [
        "  ".join(
            h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths, strict=True))
        )
    ]
    for x in rows:
        lines.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths, strict=True))
            )
        )
    for w in result.get("warnings", []):
        lines.append(f"warning: {w}")
    if result["missing_levels"]:
        lines.append(f"levels in only one report (not compared): {', '.join(result['missing_levels'])}")
    if not result["rows"]:
        lines.append(
            "nothing to compare: the reports share no level (use the same --concurrency / --request-rate)"
        )
    verdict = (
        f"REGRESSION: {result['regressions']} of {result['compared']} metrics"
        if result["regression"]
        else (f"no regression ({result['compared']} metrics within tolerance)")
    )
    lines.append(verdict)
    return "\n".join(lines)
