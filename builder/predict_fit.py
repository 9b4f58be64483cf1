"""Fit the prediction's efficiency factors to NVIDIA's published TensorRT-LLM throughput table.

    .venv/bin/python -m tritonforge.builder.predict_fit [--write]

Rows: `builder/fixtures/published_trtllm_perf.json` (sources cited there). Each row is planned as a
tier (the model's real config.json from `builder/fixtures/`, the row's GPU, TP, format, FP8 KV, the
assumed engine limits of the file), and the model in `builder.predict` is run at maximum throughput.

Parameters fitted: per calibration group (GPU architecture / weight format), the fraction of peak
FLOP/s (`compute`), of peak HBM bandwidth streaming weights (`bandwidth`) and reading the paged KV
cache (`kv_bandwidth`); per GPU architecture, the NVLink efficiency of TP all-reduces (`nvlink`:
NVLink 4 on Hopper and NVLink 5 on Blackwell are different links, and the Blackwell rows come from
another TensorRT-LLM release and its all-reduce kernels); one latency per ring step of a TP
all-reduce (`allreduce_step_latency_s`, for every GPU: a TP all-reduce costs 2 (TP-1) of them).
Objective: least squares of log(predicted / published). `--write` stores
them in `builder/fixtures/predict_calibration.json`; the report gives in-sample and
leave-one-out errors (each row predicted by factors fitted without it).
"""

from __future__ import annotations

import argparse
import json
import math
from functools import cache
from pathlib import Path

from tritonforge.builder import predict
from tritonforge.builder.gpus import get_gpu

PUBLISHED_FILE = predict.FIXTURES / "published_trtllm_perf.json"


def load_published(path: Path = PUBLISHED_FILE) -> dict:
    return json.loads(path.read_text())


def row_spec(row: dict, assumptions: dict) -> dict:
    """The deployment spec (as data) that reproduces one published row."""
    return {
        "name": "published",
        "tiers": [
            {
                "name": "main",
                "model": f"fixture:{row['model']}",
                "runtime": "trtllm-engine",
                "gpu": {"type": row["gpu"], "count": row["tp"]},
                "parallelism": {"tp": row["tp"]},
                "quantization": {"format": row["format"], "kv_cache_dtype": row["kv_cache_dtype"]},
                "kv_cache": {
                    "free_gpu_mem_fraction": assumptions["kv_cache_free_gpu_mem_fraction"],
                    "tokens_per_block": 32,
                },
                "limits": {
                    "max_batch_size": assumptions["engine_max_batch_size"],
                    "max_input_len": row["isl"],
                    "max_output_len": row["osl"],
                    "max_num_tokens": assumptions["engine_max_num_tokens"],
                },
            }
        ],
    }


@cache
def _config(model: str) -> dict:
    return json.loads((predict.FIXTURES / f"{model}.json").read_text())


def row_tier_plan(row: dict, assumptions: dict):
    from tritonforge.builder.planner import plan_tier
    from tritonforge.builder.spec import parse_spec

    spec = parse_spec(row_spec(row, assumptions))
    tier = spec.tiers[0]
    return plan_tier(tier, _config(row["model"]), get_gpu(row["gpu"]))


def row_cases(doc: dict | None = None) -> list[tuple[dict, predict.Geometry, predict.Workload]]:
    doc = doc or load_published()
    out = []
    for row in doc["rows"]:
        t = row_tier_plan(row, doc["assumptions"])
        out.append((row, predict.geometry(t), predict.Workload(row["isl"], row["osl"])))
    return out


def _predict(g, w, groups: dict, nvlink: dict[str, float], default_group: str, step_s: float) -> float:
    grp = predict.calibration_group(g.gpu, g.fmt)
    c, b, kvb = groups.get(grp, groups[default_group])
    ar = predict.nvlink_efficiency({"nvlink": nvlink, "default_group": default_group}, g.gpu.arch)
    f = predict.Factors(c, b, kvb, ar, grp, grp in groups, step_s)
    return predict.predict_model(g, w, f).output_tokens_per_s


US = 1e-6  # the step latency is fitted in microseconds (the solver's variables are then all of order 1)


def fit(cases, start: dict | None = None) -> dict:
    """Least squares on log ratios (scipy's bounded trust-region solver)."""
    import numpy as np
    from scipy.optimize import least_squares

    names = sorted({predict.calibration_group(g.gpu, g.fmt) for _, g, _ in cases})
    arches = sorted({g.gpu.arch for _, g, _ in cases})
    n = 3 * len(names) + len(arches) + 1
    x0 = [0.5, 0.7, 0.7] * len(names) + [0.5] * len(arches) + [5.0]

    def unpack(x):
        groups = {n: (x[3 * i], x[3 * i + 1], x[3 * i + 2]) for i, n in enumerate(names)}
        return groups, dict(zip(arches, x[3 * len(names) : -1], strict=True)), x[-1] * US

    def resid(x):
        groups, ar, step = unpack(x)
        return np.array(
            [
                math.log(_predict(g, w, groups, ar, names[0], step) / row["output_tokens_per_s"])
                for row, g, w in cases
            ]
        )

    lo = [0.05] * (3 * len(names)) + [0.02] * len(arches) + [0.0]
    hi = [1.0] * (n - 1) + [200.0]
    r = least_squares(resid, x0, bounds=(lo, hi), x_scale=[0.1] * (n - 1) + [1.0])
    groups, ar, step = unpack(r.x)
    return {
        "groups": {
            n: {
                "compute": round(float(c), 4),
                "bandwidth": round(float(b), 4),
                "kv_bandwidth": round(float(k), 4),
            }
            for n, (c, b, k) in groups.items()
        },
        "nvlink": {a: round(float(v), 4) for a, v in ar.items()},
        "allreduce_step_latency_s": round(float(step), 9),
    }


def evaluate(cases, calib: dict) -> list[dict]:
    groups = {n: (v["compute"], v["bandwidth"], v["kv_bandwidth"]) for n, v in calib["groups"].items()}
    out = []
    for row, g, w in cases:
        pred = _predict(
            g, w, groups, calib["nvlink"], calib["default_group"], predict.allreduce_step_latency(calib)
        )
        bnd = predict.bound(g, w).output_tokens_per_s
        out.append({**row, "predicted": pred, "bound": bnd, "ratio": pred / row["output_tokens_per_s"]})
    return out


def error_summary(ratios: list[float]) -> dict:
    errs = sorted(abs(r - 1) for r in ratios)
    return {
        "n": len(errs),
        "mean_abs_pct": round(100 * sum(errs) / len(errs), 1),
        "median_abs_pct": round(100 * errs[len(errs) // 2], 1),
        "max_abs_pct": round(100 * errs[-1], 1),
        "within_25pct": sum(e <= 0.25 for e in errs),
    }


def leave_one_out(cases, default_group: str) -> list[float]:
    ratios = []
    for i in range(len(cases)):
        rest = cases[:i] + cases[i + 1 :]
        c = fit(rest)
        c["default_group"] = default_group
        row, g, w = cases[i]
        groups = {n: (v["compute"], v["bandwidth"], v["kv_bandwidth"]) for n, v in c["groups"].items()}
        step = c["allreduce_step_latency_s"]
        ratios.append(_predict(g, w, groups, c["nvlink"], default_group, step) / row["output_tokens_per_s"])
    return ratios


def aic_preference(cases, loo_ratios: list[float], aic_rows: list[dict]) -> dict:
    """Per calibration group (and per group and TP size), which source is closer to the published rows:
    our leave-one-out prediction (ours is fitted on these rows, so in-sample would flatter it) or
    AIConfigurator's.
    Mean |log(predicted/published)| over the rows both cover; a group AIConfigurator could not
    estimate (an error on every row) stays ours."""
    by_key = {
        (r["source"], r["model"], r["gpu"], r["tp"], r["format"], r["isl"], r["osl"]): r for r in aic_rows
    }
    per: dict[str, dict[str, list[float]]] = {}
    for (row, g, _), lr in zip(cases, loo_ratios, strict=True):
        a = by_key.get(
            (row["source"], row["model"], row["gpu"], row["tp"], row["format"], row["isl"], row["osl"])
        )
        tps = ((a or {}).get("raw") or {}).get("tokens/s")
        if not tps:
            continue
        grp = predict.calibration_group(g.gpu, g.fmt)
        for k in (grp, f"{grp} tp{row['tp']}"):  # per group, and per group and TP size (finer wins)
            d = per.setdefault(k, {"ours": [], "aic": []})
            d["ours"].append(abs(math.log(lr)))
            d["aic"].append(abs(math.log(tps / row["output_tokens_per_s"])))
    out = {}
    for grp, d in sorted(per.items()):
        ours, aic = sum(d["ours"]) / len(d["ours"]), sum(d["aic"]) / len(d["aic"])
        out[grp] = {
            "prefer": "aiconfigurator" if aic < ours else "calibrated",
            "rows": len(d["ours"]),
            "mean_abs_log_err_ours_loo": round(ours, 4),
            "mean_abs_log_err_aiconfigurator": round(aic, 4),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="fit the prediction's efficiency factors")
    ap.add_argument(
        "--write", action="store_true", help="store them in builder/fixtures/predict_calibration.json"
    )
    ap.add_argument("--loo", action="store_true", help="also report leave-one-out error (slower)")
    ap.add_argument(
        "--aic-eval",
        default=None,
        metavar="FILE",
        help="AIConfigurator's estimates of the rows (predict_aic.py): choose per group (needs --loo)",
    )
    args = ap.parse_args()
    doc = load_published()
    cases = row_cases(doc)
    calib = fit(cases)
    calib["default_group"] = "Hopper/fp8"
    res = evaluate(cases, calib)
    summary = {"in_sample": error_summary([r["ratio"] for r in res])}
    loo = None
    if args.loo:
        loo = leave_one_out(cases, calib["default_group"])
        summary["leave_one_out"] = error_summary(loo)
    calib["fit"] = {
        "rows": len(cases),
        "published": "builder/fixtures/published_trtllm_perf.json",
        "objective": "least squares of log(predicted/published)",
        **summary,
    }
    old = predict.load_calibration() if predict.CALIBRATION_FILE.is_file() else {}
    if args.aic_eval and loo is not None:
        aic_rows = json.loads(Path(args.aic_eval).read_text())
        pref = aic_preference(cases, loo, aic_rows)
        calib["aiconfigurator"] = {
            "version": "0.12.0",
            "evaluation": Path(args.aic_eval).name,
            "groups": pref,
            "prefer": {g: v["prefer"] for g, v in pref.items()},
        }
    elif "aiconfigurator" in old:
        calib["aiconfigurator"] = old["aiconfigurator"]  # keep the last evaluation's choice
    print(json.dumps(calib, indent=1))
    if args.write:
        predict.CALIBRATION_FILE.write_text(json.dumps(calib, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
