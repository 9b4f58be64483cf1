"""Benchmark `tritonforge plan` as a whole process on the five golden specs (target: < 1 s each).

    .venv/bin/python benchmarks/bench_plan.py [--repeat 5] [--json]

Prints, per spec, the median wall time of `tritonforge plan SPEC --json` (a fresh process each time:
interpreter start, imports, YAML, planning, JSON) and the plan's headline figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "tests" / "fixtures" / "specs"
GOLDEN = [
    "llama31-8b-fp8-h100.yaml",
    "llama31-70b-fp8-tp2-h100.yaml",
    "llama31-70b-int4awq-h100.yaml",
    "llama33-70b-nvfp4-b200.yaml",
    "llama31-70b-fp8-draft-h100.yaml",
]
TARGET_S = 1.0


def command() -> list[str]:
    exe = Path(sys.executable).parent / "tritonforge"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("tritonforge")
    return [found] if found else [sys.executable, "-c", "from tritonforge.cli import main; main()"]


def run(spec: Path, repeat: int, extra: list[str] | None = None) -> tuple[list[float], dict]:
    times, out = [], ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(
            command() + ["plan", str(spec), "--json", *(extra or [])],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"plan {spec.name} failed ({proc.returncode}): {proc.stderr.strip()}")
        out = proc.stdout
    return times, json.loads(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    for name in GOLDEN:
        times, plan = run(SPECS / name, args.repeat)
        t = plan["tiers"][0]
        m, tp = t["memory"], t["throughput"]
        rows.append(
            {
                "spec": name,
                "median_s": round(statistics.median(times), 3),
                "min_s": round(min(times), 3),
                "max_s": round(max(times), 3),
                "gpu": f"{t['gpu_count']}x{t['gpu']['name']}",
                "weights_gib": m["gib"]["weights"],
                "kv_kib_per_token": m["kv_bytes_per_token"] / 1024,
                "max_sequences": m["max_concurrent_sequences"],
                "decode_tok_s": tp["decode_tokens_per_s"],
                "usd_per_m_tokens": tp["cost_per_million_output_tokens"],
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"tritonforge plan, whole process, median of {args.repeat} (target < {TARGET_S:.1f} s)")
        print(
            f"{'spec':<34}{'median':>8}{'max':>8}  {'gpus':<12}{'weights':>9}{'KV/tok':>9}{'seqs':>6}"
            f"{'decode tok/s':>14}{'$/1M':>9}"
        )
        for r in rows:
            print(
                f"{r['spec']:<34}{r['median_s']:>7.3f}s{r['max_s']:>7.3f}s  {r['gpu']:<12}{r['weights_gib']:>6.2f}GiB"
                f"{r['kv_kib_per_token']:>6.0f}KiB{r['max_sequences']:>6}{r['decode_tok_s']:>14,.0f}"
                f"{r['usd_per_m_tokens']:>9.4f}"
            )
    # --workload adds the prediction (no target: it may call AIConfigurator when installed)
    wt, _ = run(SPECS / GOLDEN[1], args.repeat, ["--workload", "isl=2048,osl=256", "--no-aiconfigurator"])
    print(
        f"with --workload isl=2048,osl=256 (calibrated model), {GOLDEN[1]}: median {statistics.median(wt):.3f}s"
    )
    slow = [r["spec"] for r in rows if r["median_s"] >= TARGET_S]
    if slow:
        print(f"over target: {', '.join(slow)}", file=sys.stderr)
    return 1 if slow else 0


if __name__ == "__main__":
    raise SystemExit(main())
