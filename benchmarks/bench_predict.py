"""Published vs predicted: NVIDIA's TensorRT-LLM throughput table against our bound, our calibrated
prediction and AIConfigurator's estimate, with ratios.

    .venv/bin/python benchmarks/bench_predict.py [--loo] [--markdown] [--json]

Published rows: builder/fixtures/published_trtllm_perf.json (sources cited there). AIConfigurator
figures: builder/fixtures/aiconfigurator_eval_0.12.0.json, made by running
`builder/predict_aic.py` with AIConfigurator's own interpreter on the same rows (batch = the batch our
KV-pool model allows at the row's ISL/OSL, context tokens per step = what keeps that batch full).
`--loo` adds our leave-one-out prediction (each row predicted by factors fitted without it) and
uses it to compare with AIConfigurator fairly (ours is fitted on these rows; AIConfigurator is not).
Also prints the whole-process time of `tritonforge plan --workload` on one golden spec.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT.parent))

from tritonforge.builder import predict, predict_fit  # noqa: E402

AIC_EVAL = ROOT / "builder" / "fixtures" / "aiconfigurator_eval_0.12.0.json"


def key(r: dict) -> tuple:
    return (r["source"], r["model"], r["gpu"], r["tp"], r["format"], r["isl"], r["osl"])


def aic_results() -> dict[tuple, dict]:
    if not AIC_EVAL.is_file():
        return {}
    return {key(r): r for r in json.loads(AIC_EVAL.read_text())}


def summary(ratios: list[float]) -> str:
    if not ratios:
        return "n/a"
    errs = [abs(r - 1) for r in ratios]
    return (
        f"n {len(errs)}  mean |err| {100 * statistics.mean(errs):.1f}%  median {100 * statistics.median(errs):.1f}%"
        f"  max {100 * max(errs):.1f}%  within 25%: {sum(e <= 0.25 for e in errs)}/{len(errs)}"
    )


def plan_time() -> float:
    exe = Path(sys.executable).parent / "tritonforge"
    spec = ROOT / "tests" / "fixtures" / "specs" / "llama31-70b-fp8-tp2-h100.yaml"
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run(
            [str(exe), "plan", str(spec), "--json", "--workload", "isl=2048,osl=256", "--no-aiconfigurator"],
            capture_output=True,
            check=True,
        )
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--loo", action="store_true", help="add leave-one-out predictions (refits per row; slower)"
    )
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown (for README)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    doc = predict_fit.load_published()
    cases = predict_fit.row_cases(doc)
    calib = predict.load_calibration()
    res = predict_fit.evaluate(cases, calib)
    loo = predict_fit.leave_one_out(cases, calib["default_group"]) if args.loo else [math.nan] * len(res)
    aic = aic_results()
    rows = []
    for r, lr in zip(res, loo, strict=True):
        a = aic.get(key(r), {})
        aic_tps = (a.get("raw") or {}).get("tokens/s")
        rows.append(
            {
                **{k: r[k] for k in ("source", "model", "gpu", "tp", "format", "isl", "osl")},
                "published": r["output_tokens_per_s"],
                "bound": r["bound"],
                "ours": r["predicted"],
                "ours_ratio": r["ratio"],
                "ours_loo_ratio": lr,
                "aic": aic_tps,
                "aic_ratio": aic_tps / r["output_tokens_per_s"] if aic_tps else None,
                "aic_error": a.get("error"),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    hdr = [
        "release",
        "model",
        "GPU",
        "TP",
        "fmt",
        "ISL/OSL",
        "published",
        "bound",
        "bound/pub",
        "ours",
        "ours/pub",
        "ours LOO/pub",
        "AIC",
        "AIC/pub",
    ]
    if args.markdown:
        print("| " + " | ".join(hdr) + " |")
        print("|" + "---|" * len(hdr))
    else:
        print(
            f"{'rel':<6}{'model':<15}{'gpu':<9}{'tp':>3} {'fmt':<6}{'isl/osl':>11}{'published':>11}{'bound':>9}"
            f"{'b/pub':>7}{'ours':>9}{'o/pub':>7}{'loo':>7}{'AIC':>9}{'A/pub':>7}"
        )
    for x in rows:
        aic_s = f"{x['aic']:,.0f}" if x["aic"] else ("error" if x["aic_error"] else "-")
        aic_r = f"{x['aic_ratio']:.2f}" if x["aic_ratio"] else "-"
        loo_r = f"{x['ours_loo_ratio']:.2f}" if not math.isnan(x["ours_loo_ratio"]) else "-"
        cells = [
            x["source"],
            x["model"],
            x["gpu"],
            str(x["tp"]),
            x["format"],
            f"{x['isl']}/{x['osl']}",
            f"{x['published']:,.0f}",
            f"{x['bound']:,.0f}",
            f"{x['bound'] / x['published']:.2f}",
            f"{x['ours']:,.0f}",
            f"{x['ours_ratio']:.2f}",
            loo_r,
            aic_s,
            aic_r,
        ]
        if args.markdown:
            print("| " + " | ".join(cells) + " |")
        else:
            print(
                f"{cells[0]:<6}{cells[1]:<15}{cells[2]:<9}{cells[3]:>3} {cells[4]:<6}{cells[5]:>11}{cells[6]:>11}"
                f"{cells[7]:>9}{cells[8]:>7}{cells[9]:>9}{cells[10]:>7}{cells[11]:>7}{cells[12]:>9}{cells[13]:>7}"
            )
    print()
    print(
        "bound >= published:",
        sum(x["bound"] >= x["published"] for x in rows),
        "/",
        len(rows),
        f"(min bound/published {min(x['bound'] / x['published'] for x in rows):.2f})",
    )
    print("ours, in sample:     ", summary([x["ours_ratio"] for x in rows]))
    if args.loo:
        print("ours, leave-one-out: ", summary([x["ours_loo_ratio"] for x in rows]))
    print(
        "AIConfigurator 0.12.0:",
        summary([x["aic_ratio"] for x in rows if x["aic_ratio"]]),
        f"({sum(1 for x in rows if x['aic_error'])} rows it could not estimate)"
        if aic
        else "(no evaluation file)",
    )
    prefs = (calib.get("aiconfigurator") or {}).get("prefer", {})
    if aic and prefs:
        chosen, ours_key = [], "ours_loo_ratio" if args.loo else "ours_ratio"
        for x, (_, g, _) in zip(rows, cases, strict=True):
            grp = predict.calibration_group(g.gpu, g.fmt)
            use_aic = prefs.get(f"{grp} tp{x['tp']}", prefs.get(grp)) == "aiconfigurator" and x["aic_ratio"]
            chosen.append(x["aic_ratio"] if use_aic else x[ours_key])
        print(
            "chosen per group/TP:  ",
            summary(chosen),
            "(what plan --workload uses with AIConfigurator installed)",
        )
    groups: dict[str, list[dict]] = {}
    for x, (_, g, _) in zip(rows, cases, strict=True):
        groups.setdefault(predict.calibration_group(g.gpu, g.fmt) + f" tp{x['tp']}", []).append(x)
    for name, xs in sorted(groups.items()):
        ours_key = "ours_loo_ratio" if args.loo else "ours_ratio"
        print(f"  {name:<22} ours: {summary([x[ours_key] for x in xs])}")
        if aic:
            print(f"  {'':<22} AIC:  {summary([x['aic_ratio'] for x in xs if x['aic_ratio']])}")
    print(
        f"\ntritonforge plan --workload --no-aiconfigurator, whole process, median of 3: {plan_time():.3f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
