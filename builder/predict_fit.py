"""Fit the prediction's efficiency factors to NVIDIA's published TensorRT-LLM throughput table.

    .venv/bin/python -m tritonforge.builder.predict_fit [--write]

Rows: `builder/fixtures/published_trtllm_perf.json` (sources cited there). Each row is planned as a
tier (the model's real config.json from `builder/fixtures/`, the row's GPU, TP, format, FP8 KV, the
assumed engine limits of the file), and the model in `builder.predict` is run at maximum throughput.

Parameters fitted: per calibration group (GPU architecture / weight format), the fraction of peak
FLOP/s (`compute`) and of peak HBM bandwidth (`bandwidth`) reached; one NVLink efficiency for TP
all-reduces (`nvlink`) shared by every group. Objective: least squares of log(predicted / published). `--write` stores
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
        "tiers": [{
            "name": "main", "model": f"fixture:{row['model']}", "runtime": "trtllm-engine",
            "gpu": {"type": row["gpu"], "count": row["tp"]}, "parallelism": {"tp": row["tp"]},
            "quantization": {"format": row["format"], "kv_cache_dtype": row["kv_cache_dtype"]},
            "kv_cache": {"free_gpu_mem_fraction": assumptions["kv_cache_free_gpu_mem_fraction"],
                         "tokens_per_block": 32},
            "limits": {"max_batch_size": assumptions["engine_max_batch_size"], "max_input_len": row["isl"],
                       "max_output_len": row["osl"], "max_num_tokens": assumptions["engine_max_num_tokens"]},
        }],
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


def _predict(g, w, groups: dict, nvlink: float, default_group: str) -> float:
    grp = predict.calibration_group(g.gpu, g.fmt)
    c, b = groups.get(grp, groups[default_group])
    f = predict.Factors(c, b, nvlink, grp, grp in groups)
    return predict.predict_model(g, w, f).output_tokens_per_s


def fit(cases, start: dict | None = None) -> dict:
    """Least squares on log ratios (scipy's bounded trust-region solver)."""
    import numpy as np
    from scipy.optimize import least_squares

    names = sorted({predict.calibration_group(g.gpu, g.fmt) for _, g, _ in cases})
    x0 = [0.5, 0.7] * len(names)
    x0.append(0.5)

    def unpack(x):
        groups = {n: (x[2 * i], x[2 * i + 1]) for i, n in enumerate(names)}
        return groups, x[-1]

    def resid(x):
        groups, ar = unpack(x)
        return np.array([math.log(_predict(g, w, groups, ar, names[0]) / row["output_tokens_per_s"])
                         for row, g, w in cases])

    lo = [0.05] * (2 * len(names)) + [0.02]
    hi = [1.0] * (2 * len(names)) + [1.0]
    r = least_squares(resid, x0, bounds=(lo, hi), x_scale=[0.1] * (2 * len(names) + 1))
    groups, ar = unpack(r.x)
    return {"groups": {n: {"compute": round(float(c), 4), "bandwidth": round(float(b), 4)}
                       for n, (c, b) in groups.items()},
            "nvlink": round(float(ar), 4)}


def evaluate(cases, calib: dict) -> list[dict]:
    groups = {n: (v["compute"], v["bandwidth"]) for n, v in calib["groups"].items()}
    out = []
    for row, g, w in cases:
        pred = _predict(g, w, groups, calib["nvlink"], calib["default_group"])
        bnd = predict.bound(g, w).output_tokens_per_s
        out.append({**row, "predicted": pred, "bound": bnd, "ratio": pred / row["output_tokens_per_s"]})
    return out


def error_summary(ratios: list[float]) -> dict:
    errs = sorted(abs(r - 1) for r in ratios)
    return {"n": len(errs), "mean_abs_pct": round(100 * sum(errs) / len(errs), 1),
            "median_abs_pct": round(100 * errs[len(errs) // 2], 1), "max_abs_pct": round(100 * errs[-1], 1),
            "within_25pct": sum(e <= 0.25 for e in errs)}


def leave_one_out(cases, default_group: str) -> list[float]:
    ratios = []
    for i in range(len(cases)):
        rest = cases[:i] + cases[i + 1:]
        c = fit(rest)
        c["default_group"] = default_group
        row, g, w = cases[i]
        groups = {n: (v["compute"], v["bandwidth"]) for n, v in c["groups"].items()}
        ratios.append(_predict(g, w, groups, c["nvlink"], default_group) / row["output_tokens_per_s"])
    return ratios


def main() -> int:
    ap = argparse.ArgumentParser(description="fit the prediction's efficiency factors")
    ap.add_argument("--write", action="store_true", help="store them in builder/fixtures/predict_calibration.json")
    ap.add_argument("--loo", action="store_true", help="also report leave-one-out error (slower)")
    args = ap.parse_args()
    doc = load_published()
    cases = row_cases(doc)
    calib = fit(cases)
    calib["default_group"] = "Hopper/fp8"
    res = evaluate(cases, calib)
    summary = {"in_sample": error_summary([r["ratio"] for r in res])}
    if args.loo:
        summary["leave_one_out"] = error_summary(leave_one_out(cases, calib["default_group"]))
    calib["fit"] = {"rows": len(cases), "published": "builder/fixtures/published_trtllm_perf.json",
                    "objective": "least squares of log(predicted/published)", **summary}
    print(json.dumps(calib, indent=1))
    if args.write:
        predict.CALIBRATION_FILE.write_text(json.dumps(calib, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
