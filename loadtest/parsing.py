"""Parsers for command-line values: durations, lists, key=value lists, SLOs. Errors are `UserError`."""

from __future__ import annotations

import re

from tritonforge.errors import UserError

PROTOCOLS = ("http-stream", "grpc-stream", "http")  # here, not in protocols.py: the CLI stays light

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s|m|h)?\s*$")
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

# SLO keys and the metric each bounds (all latencies, in ms).
SLO_METRICS = {"ttft": "ttft_ms", "itl": "itl_ms", "e2e": "e2e_ms"}


def parse_duration(text: str | float | int, what: str = "duration", default_unit: str = "s") -> float:
    """'60s', '500ms', '2m', '1.5h', '250us' or a bare number (in `default_unit`) -> seconds."""
    if isinstance(text, (int, float)):
        value, unit = float(text), default_unit
    else:
        m = _DURATION.match(str(text))
        if not m:
            raise UserError(f"invalid {what} {text!r}: use a number with a unit such as 60s, 500ms, 2m")
        value, unit = float(m.group(1)), m.group(2) or default_unit
    return value * _UNIT_S[unit]


def parse_number_list(text: str, what: str, integer: bool = True) -> list[float] | list[int]:
    """'1,2,4,8' -> [1, 2, 4, 8] (all > 0)."""
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    if not items:
        raise UserError(f"invalid {what} {text!r}: give a comma-separated list such as 1,2,4,8")
    out: list = []
    for s in items:
        try:
            v = int(s) if integer else float(s)
        except ValueError:
            kind = "whole numbers" if integer else "numbers"
            raise UserError(
                f"invalid {what} {text!r}: {s!r} is not a number; use {kind} such as 1,2,4,8"
            ) from None
        if v <= 0:
            raise UserError(f"invalid {what} {text!r}: values must be > 0")
        out.append(v)
    return out


def parse_kv_list(text: str, what: str) -> dict[str, str]:
    """'a=1,b=x' -> {'a': '1', 'b': 'x'}; keys are lower-cased."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserError(f"invalid {what} {text!r}: {part!r} is not key=value")
        out[key.strip().lower()] = value.strip()
    return out


def parse_slo(text: str | None) -> dict[str, float]:
    """'ttft=500ms,itl=50ms,e2e=2s' -> {'ttft_ms': 500.0, 'itl_ms': 50.0, 'e2e_ms': 2000.0}.

    A bare number is milliseconds.
    """
    if text is None or not str(text).strip():
        return {}
    out: dict[str, float] = {}
    for key, value in parse_kv_list(text, "--slo").items():
        if key not in SLO_METRICS:
            raise UserError(
                f"invalid --slo {text!r}: unknown metric {key!r}; use ttft, itl or e2e (e.g. ttft=500ms,itl=50ms)"
            )
        seconds = parse_duration(value, what=f"--slo {key}", default_unit="ms")
        if seconds <= 0:
            raise UserError(f"invalid --slo {text!r}: {key} must be > 0")
        out[SLO_METRICS[key]] = seconds * 1000.0
    return out


def format_slo(slo: dict[str, float]) -> str:
    names = {v: k for k, v in SLO_METRICS.items()}
    return ",".join(f"{names.get(k, k)}={v:g}ms" for k, v in slo.items())
