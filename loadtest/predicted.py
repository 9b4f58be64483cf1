"""Predicted vs measured: the planner's prediction at each load level, joined with what was measured,
and the gate "measured below X% of the prediction".

The prediction for a level uses the level's concurrency (or request rate) and the workload's ISL/OSL
(the measured mean lengths for a trace). A GPU tier (`trtllm-engine`) is predicted by
`tritonforge.builder.predict` for the GPU given (`--gpu`, else the spec's); a `cpu-reference` tier by
the measured CPU system (`tritonforge.builder.cpu_system`). Latencies are compared with the measured
means (the prediction is of means); `of_prediction` is the measured performance as a fraction of the
predicted one: measured / predicted for throughput, predicted / measured for latencies, so 0.8 means
"20% worse than predicted" whichever way the metric goes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tritonforge.errors import UserError
from tritonforge.loadtest.models import LevelMetrics, LevelPrediction, PredictedMetric, Report, as_dict

# (metric, Prediction attribute, measured key in LevelMetrics ("family.stat"), higher is better)
JOINED: tuple[tuple[str, str, str, bool], ...] = (
    ("ttft_ms", "ttft_ms", "ttft_ms.avg", False),
    ("itl_ms", "itl_ms", "itl_ms.avg", False),
    ("e2e_ms", "request_latency_ms", "e2e_ms.avg", False),
    ("output_tokens_per_s", "output_tokens_per_s", "output_tokens_per_s", True),
    (
        "output_tokens_per_s_per_user",
        "output_tokens_per_s_per_user",
        "output_tokens_per_s_per_user.avg",
        True,
    ),
)

# (Workload, lockstep, CPU share now) -> (Prediction or None, why none / system)
Predictor = Callable[[Any, bool, float | None], tuple[Any, str]]


def _measured(m: dict[str, Any], key: str) -> float | None:
    cur: Any = m
    for part in key.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return float(cur) if isinstance(cur, (int, float)) and not isinstance(cur, bool) else None


def join(prediction: dict[str, Any], metrics: LevelMetrics | dict[str, Any]) -> list[PredictedMetric]:
    """One row per metric: predicted, measured, measured/predicted and the fraction of the prediction."""
    m = as_dict(metrics)
    rows = []
    for name, attr, key, higher in JOINED:
        p = prediction.get(attr)
        if not isinstance(p, (int, float)):
            continue
        v = _measured(m, key)
        ratio = round(v / p, 4) if v is not None and p > 0 else None
        of = None
        if v is not None and p > 0 and v > 0:
            of = round(v / p if higher else p / v, 4)
        rows.append(
            PredictedMetric(
                metric=name,
                predicted=round(float(p), 3),
                measured=v,
                measured_stat=key,
                ratio=ratio,
                of_prediction=of,
                better="higher" if higher else "lower",
            )
        )
    return rows


def level_workload(spec_workload: Any, mode: str, value: float, m: LevelMetrics) -> Any:
    """The predictor's Workload for a level: the workload's ISL/OSL (measured means for a trace)."""
    from tritonforge.builder.predict import Workload

    isl, osl = spec_workload.isl, spec_workload.osl
    if spec_workload.trace:
        isl = (
            round(m.input_tokens_per_request.avg)
            if m.input_tokens_per_request and m.input_tokens_per_request.avg
            else isl
        )
        osl = (
            round(m.output_tokens_per_request.avg)
            if m.output_tokens_per_request and m.output_tokens_per_request.avg
            else osl
        )
    conc = int(value) if mode == "concurrency" else None
    rate = float(value) if mode == "rate" else None
    return Workload(
        max(1, int(isl)),
        max(1, int(osl)),
        float(spec_workload.isl_std),
        float(spec_workload.osl_std),
        conc,
        rate,
    )


def lockstep(spec_workload: Any, mode: str, spawn_rate: float | None = None) -> bool:
    """Do a closed loop's users move in lockstep? All start at once (no --spawn-rate) and every request
    has the same prompt and output length, so they finish in the same engine step and are re-sent together."""
    w = spec_workload
    return (
        mode == "concurrency"
        and spawn_rate is None
        and not w.trace
        and not w.isl_std
        and not w.osl_std
        and bool(w.fixed_output)
        and not w.repeat
        and not w.paraphrase
    )


def make_predictor(
    spec: Any, tier: str | None, gpu: str | None, cpu_system_file: str | None = None
) -> tuple[Predictor | None, str]:
    """A function Workload -> (Prediction, system) for the spec's tier, or (None, why not)."""
    if spec is None:
        return None, "no prediction: pass --spec SPEC.yaml or --repo DIR (its lock holds the spec)"
    from tritonforge.builder.modelref import resolve_model

    t = spec.tier(tier) if tier else spec.tiers[0]
    runtime = str(getattr(t.runtime, "value", t.runtime))
    target = resolve_model(t.model)
    if runtime == "cpu-reference":
        from tritonforge.builder import cpu_system

        sysm = cpu_system.load_system(cpu_system_file)
        cost = cpu_system.model_cost(target.config, t.model)
        system = f"cpu-reference system measured {sysm.measured[:10]}"

        def cpu(w: Any, in_lockstep: bool = False, share: float | None = None) -> tuple[Any, str]:
            return cpu_system.predict_cpu(sysm, w, t.limits.max_batch_size, cost, in_lockstep, share), system

        return cpu, system
    from tritonforge.builder import planner, predict
    from tritonforge.builder.gpus import get_gpu

    g = get_gpu(gpu or t.gpu.type)
    draft = resolve_model(t.draft.model) if getattr(t, "draft", None) else None
    tp = planner.plan_tier(t, target.config, g, draft_config=draft.config if draft else None)

    def gpu_predict(w: Any, in_lockstep: bool = False, share: float | None = None) -> tuple[Any, str]:
        # the GPU model is steady-state and a GPU is not time-shared with other processes
        tpred = predict.predict_tier(tp, w)
        if tpred.prediction is None:
            return None, f"no prediction: {tpred.error}"
        return tpred.prediction, f"{g.name} x{t.gpu.count}"

    return gpu_predict, f"{g.name} x{t.gpu.count}"


def busy_share(cpu_share: float | None, metrics: LevelMetrics | dict[str, Any]) -> float | None:
    """The share of a core the engine thread got while the level's requests ran.

    The share meter's window is the whole run (`wall_s`): it also holds the load generator's start and
    stop, when the engine idles, so its reading is diluted by `duration_s` (first request sent to last
    answer) / `wall_s`. On a 2-core host an 8 s run had a 12 s window: the raw share (0.48) made every
    predicted time 1.5-2x the measured one. Runs without both figures keep the raw share.
    """
    if cpu_share is None:
        return None
    m = as_dict(metrics)
    wall, busy = _measured(m, "wall_s"), _measured(m, "duration_s")
    if wall is None or busy is None or busy <= 0 or wall <= busy:
        return cpu_share
    return min(1.0, cpu_share * wall / busy)


def level_prediction(
    predictor: Predictor | None,
    why: str,
    workload: Any,
    metrics: LevelMetrics,
    in_lockstep: bool = False,
    cpu_share: float | None = None,
) -> LevelPrediction:
    """The `prediction` section of one level (a note instead when there is none)."""
    if predictor is None:
        return LevelPrediction(note=why)
    try:
        pred, system = predictor(workload, in_lockstep, busy_share(cpu_share, metrics))
    except UserError as exc:
        return LevelPrediction(workload=workload.to_dict(), note=f"no prediction: {exc}")
    if pred is None:
        return LevelPrediction(workload=workload.to_dict(), note=system)
    d = pred.to_dict()
    return LevelPrediction(
        source=d.get("source"), system=system, workload=workload.to_dict(), predicted=d, rows=join(d, metrics)
    )


# ------------------------------------------------------------------------------------------ gate

_PCT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(%?)\s*$")


def parse_min_of_prediction(text: str) -> float:
    """'75%' or '0.75' -> 0.75; anything else (or outside (0, 10]) is a UserError."""
    m = _PCT.match(text or "")
    fix = "e.g. --min-of-prediction 75% (or 0.75)"
    if not m:
        raise UserError(f"invalid --min-of-prediction {text!r}: not a percentage; {fix}")
    v = float(m.group(1)) / (100.0 if m.group(2) else 1.0)
    if not 0 < v <= 10:
        raise UserError(f"invalid --min-of-prediction {text!r}: must be above 0% and at most 1000%; {fix}")
    return v


def _unit(metric: str) -> str:
    return " ms" if metric.endswith("_ms") else " tok/s"


def check(report: Report | dict[str, Any], minimum: float) -> dict[str, Any]:
    """Every metric whose measured performance is below `minimum` of the prediction, one line each."""
    failures: list[str] = []
    checked = 0
    levels = as_dict(report).get("levels", [])
    for lv in levels:
        for r in (lv.get("prediction") or {}).get("rows") or []:
            of = r.get("of_prediction")
            if of is None:
                continue
            checked += 1
            if of < minimum:
                worse = "above" if r.get("better") == "lower" else "below"
                failures.append(
                    f"{lv['label']} {r['metric']}: measured {r['measured']:,.2f}{_unit(r['metric'])} is {of:.0%} of the "
                    f"prediction ({r['predicted']:,.2f}{_unit(r['metric'])}, {worse} it; needs >= {minimum:.0%})"
                )
    return {"min_of_prediction": minimum, "checked": checked, "failed": bool(failures), "failures": failures}


def table(report: Report | dict[str, Any]) -> str | None:
    """Predicted vs measured per level and metric as aligned text (None when no level has a prediction)."""
    levels = as_dict(report).get("levels", [])
    rows = []
    for lv in levels:
        p = lv.get("prediction") or {}
        for r in p.get("rows") or []:
            rows.append(
                [
                    lv["label"],
                    r["metric"],
                    f"{r['predicted']:,.2f}",
                    "-" if r.get("measured") is None else f"{r['measured']:,.2f}",
                    "-" if r.get("ratio") is None else f"{r['ratio']:.2f}",
                    "-" if r.get("of_prediction") is None else f"{r['of_prediction']:.0%}",
                ]
            )
    if not rows:
        notes = {n for lv in levels if (n := (lv.get("prediction") or {}).get("note")) is not None}
        return f"predicted vs measured: {'; '.join(sorted(notes))}" if notes else None
    head = ["level", "metric", "predicted", "measured", "meas/pred", "of prediction"]
    widths = [max(len(h), *(len(x[i]) for x in rows)) for i, h in enumerate(head)]
    src = next(
        (
            (lv.get("prediction") or {}).get("source")
            for lv in levels
            if (lv.get("prediction") or {}).get("source")
        ),
        "",
    )
    out = [f"predicted vs measured (means; prediction: {src})"]
    out.append(
        "  ".join(
            h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths, strict=True))
        )
    )
    for x in rows:
        out.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths, strict=True))
            )
        )
    return "\n".join(out)
