"""Measure the CPU reference runtime as a performance "system" and fit the constants the predictor reads.

    python benchmarks/bench_cpu_system.py [--quick] [--threads N] [--out builder/fixtures/cpu_system.json]
    python benchmarks/bench_cpu_system.py --serving-report out/load/report.json [...] [--out FILE]

Runs the embedded `demo` model's CPU engine in-process (as `bench_runtime.py` does) and measures:
- decode: b requests admitted together (prompt length L, N new tokens each, no end id), the time per
  decode step each saw after its first token, over b in {1, 2, 4, 8} and two prompt lengths;
  fitted as   t_decode(b, ctx) = a + b (s + k ctx)   (ctx: mean context during decode);
- prefill: the time to the first token of b requests of n prompt tokens submitted together (b = 1,
  n in {16 .. 512}; b in {2, 4, 8}, n in {64, 128}); fitted as   t_prefill(b, n) = q + b (p n + r n^2)
  (q: admission, one forward's fixed cost, the callback; r: causal attention over the prompt).
Fits minimise the relative error (non-negative coefficients). The points are measured in interleaved
rounds (medians per point), so a change in the machine's load during the run spreads over all of them.
The fitted constants, the raw points, the date, the machine (CPU model, cores, torch threads, load
average before and after) and the model measured (parameters, matmul FLOPs per token) are written to
the JSON that `tritonforge.builder.cpu_system` reads. Figures depend on the machine and its load:
re-run it on the machine that serves.

`--serving-report` adds the serving stack's time per request on the first token's path (the `serving`
section; the engine's constants are kept): from load-test reports of the served repository
(`tritonforge loadtest --concurrency 1 --metrics-url ...`), Triton's own mean request durations of the
preprocessing model, the LLM model's execute (it enqueues the request) and one postprocessing call, at
c=1. Each is scaled from the share of a core the engine thread got in that run to the share in this file
(the whole host is shared alike), and the median over the reports is kept. The same durations at the
reports' levels with 2..max_batch users give the stack's extra time per request per other streaming user
(`request_overhead_per_user_s`: (duration at b - duration at c=1 of the same report) / (b - 1), at the
reference share; median over levels and reports, floored at 0). It also adds the served
engine's time per running sequence per decode step beyond the in-process fit (`per_sequence_step_s`:
streaming, the engine thread hands every sequence's token to Triton's response sender each step; the
in-process callback costs nothing): from the reports' closed-loop levels with 2+ users, the measured ITL
at the reference share minus the ITL predicted without it, over b; median over levels and reports, floored
at 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from tritonforge.builder.demo_model import materialize
from tritonforge.loadtest.cpushare import ShareMeter
from tritonforge.model_repo_templates.tf_runtime.engine import (
    CpuEngine,
    GenerationRequest,
    default_num_threads,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "builder" / "fixtures" / "cpu_system.json"
# The served cpu-demo tier's limits (examples/cpu-demo.yaml: max_batch_size 8) and the CPU backend's
# default token budget per step (model_repo_templates/models/tensorrt_llm_cpu.py).
LIMITS = dict(max_batch_size=8, max_num_tokens=4096, max_input_len=1024, max_seq_len=2048)


class Timed:
    """One submitted request: first-token and end times (perf_counter)."""

    def __init__(self, engine: CpuEngine, req: GenerationRequest) -> None:
        self.n = 0
        self.t_first: float | None = None
        self.t_end = 0.0
        self.done = threading.Event()
        self.t0 = time.perf_counter()
        engine.submit(req, self._cb)

    def _cb(self, c) -> None:
        now = time.perf_counter()
        if c.token_ids and self.t_first is None:
            self.t_first = now
        self.n += len(c.token_ids)
        if c.finished:
            self.t_end = now
            self.done.set()

    def wait(self) -> Timed:
        self.done.wait()
        return self


def _prompt(rng: np.random.Generator, n: int, vocab: int) -> list[int]:
    return [1] + rng.integers(3, vocab, size=n - 1).tolist()


def decode_point(
    eng: CpuEngine, rng: np.random.Generator, vocab: int, b: int, length: int, new: int
) -> list[float]:
    """Seconds per decode step each of b requests (admitted together, prompt `length`) saw."""
    rs = [
        Timed(eng, GenerationRequest(_prompt(rng, length, vocab), new, end_id=-1, streaming=True))
        for _ in range(b)
    ]
    return [(r.wait().t_end - (r.t_first or r.t_end)) / max(1, r.n - 1) for r in rs]


def prefill_point(eng: CpuEngine, rng: np.random.Generator, vocab: int, b: int, n: int) -> float:
    """Seconds until the last of b requests of n prompt tokens, submitted together, has its first token
    (one forward over b rows when the engine admits them in the same step)."""
    rs = [Timed(eng, GenerationRequest(_prompt(rng, n, vocab), 1, end_id=-1)) for _ in range(b)]
    t0 = min(r.t0 for r in rs)
    return max((r.wait().t_first or r.t_end) for r in rs) - t0


def measure(eng: CpuEngine, vocab: int, rounds: int, new: int) -> tuple[list[dict], list[dict]]:
    """Every point once per round, rounds interleaved, so a change in the machine's load spreads over all
    points instead of skewing a few; the medians per point are returned."""
    rng = np.random.default_rng(0)
    dec_grid = [(b, length) for length in (32, 256) for b in (1, 2, 4, 8)]
    pf_grid = [(1, n) for n in (16, 64, 128, 256, 512)] + [(b, n) for b in (2, 4, 8) for n in (64, 128)]
    dec: dict[tuple[int, int], list[float]] = {k: [] for k in dec_grid}
    pf: dict[tuple[int, int], list[float]] = {k: [] for k in pf_grid}
    for i in range(rounds):
        for b, n in pf_grid:
            pf[(b, n)].append(prefill_point(eng, rng, vocab, b, n))
        for b, length in dec_grid:
            dec[(b, length)].append(statistics.median(decode_point(eng, rng, vocab, b, length, new)))
        print(f"round {i + 1}/{rounds} done", flush=True)
    dec_out = [
        {"batch": b, "prompt": n, "ctx": n + new / 2, "step_s": statistics.median(v)}
        for (b, n), v in dec.items()
    ]
    pf_out = [{"batch": b, "tokens": n, "ttft_s": statistics.median(v)} for (b, n), v in pf.items()]
    for d in dec_out:
        print(f"decode b={d['batch']} L={d['prompt']}: {1000 * d['step_s']:.2f} ms/step")
    for p in pf_out:
        print(f"prefill b={p['batch']} n={p['tokens']}: {1000 * p['ttft_s']:.2f} ms")
    return dec_out, pf_out


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative least squares of the relative error (each row divided by its measured time), so the
    fast points weigh as much as the slow ones; a negative coefficient is dropped and the rest refitted."""
    keep = list(range(x.shape[1]))
    while True:
        coef, *_ = np.linalg.lstsq(x[:, keep] / y[:, None], np.ones_like(y), rcond=None)
        if (coef >= 0).all():
            break
        keep.pop(int(np.argmin(coef)))
    full = np.zeros(x.shape[1])
    full[keep] = coef
    return full, x @ full


def fit_decode(points: list[dict]) -> dict:
    """t = a + b s + b ctx k."""
    x = np.array([[1.0, p["batch"], p["batch"] * p["ctx"]] for p in points])
    y = np.array([p["step_s"] for p in points])
    coef, pred = _fit(x, y)
    return {
        "step_overhead_s": float(coef[0]),
        "per_sequence_s": float(coef[1]),
        "per_sequence_per_ctx_token_s": float(coef[2]),
        "max_abs_pct_error": round(float(np.max(np.abs(pred / y - 1))) * 100, 1),
    }


def fit_prefill(points: list[dict]) -> dict:
    """t = q + b (p n + r n^2) for b prompts of n tokens in one step (n^2: causal attention)."""
    x = np.array([[1.0, p["batch"] * p["tokens"], p["batch"] * p["tokens"] ** 2] for p in points])
    y = np.array([p["ttft_s"] for p in points])
    coef, pred = _fit(x, y)
    return {
        "fixed_s": float(coef[0]),
        "per_token_s": float(coef[1]),
        "per_token_squared_s": float(coef[2]),
        "max_abs_pct_error": round(float(np.max(np.abs(pred / y - 1))) * 100, 1),
    }


STACK_MODELS = ("preprocessing", "tensorrt_llm", "postprocessing")


def stack_levels(report: dict, reference_share: float | None) -> dict[int, dict]:
    """The serving stack's seconds per request (first token's path) of each closed-loop level of a report
    with Triton's per-model metrics, by users, scaled to `reference_share`."""
    from tritonforge.loadtest.predicted import busy_share

    out: dict[int, dict] = {}
    for lv in report.get("levels", []):
        users = lv.get("value")
        if lv.get("mode") != "concurrency" or not isinstance(users, int) or users < 1:
            continue
        models = ((lv.get("server_metrics") or {}).get("models")) or {}
        us = [((models.get(m) or {}).get("avg_request_us")) for m in STACK_MODELS]
        if any(not isinstance(u, (int, float)) for u in us):
            continue
        seconds = sum(us) / 1e6  # type: ignore[arg-type]
        share = busy_share((lv.get("prediction") or {}).get("cpu_share"), lv.get("metrics") or {})
        scale = share / reference_share if share and reference_share else 1.0
        out[users] = {
            "measured_s": round(seconds, 6),
            "engine_share": round(share, 3) if share else None,
            "at_reference_s": round(seconds * scale, 6),
        }
    return out


def serving_overhead(report: dict, reference_share: float | None) -> dict | None:
    """The stack's time per request at c=1 (`stack_levels`); None when the report has no such level."""
    return stack_levels(report, reference_share).get(1)


def per_user_overhead(report: dict, reference_share: float | None, max_batch: int) -> list[float]:
    """Per closed-loop level with 2..max_batch users: (the stack's time per request there - at c=1) /
    (users - 1), at the reference share: what each other streaming user adds to a request's way through
    the stack (its pre/postprocessing calls share the host with this request's)."""
    levels = stack_levels(report, reference_share)
    one = levels.get(1)
    if one is None:
        return []
    return [
        (x["at_reference_s"] - one["at_reference_s"]) / (b - 1)
        for b, x in sorted(levels.items())
        if 2 <= b <= max_batch
    ]


def per_sequence_excess(report: dict, system: dict) -> list[float]:
    """Per closed-loop level with b >= 2 users (at most the engine's max batch): (measured ITL scaled to the
    system's share - the predicted ITL without this term) / b, in seconds at the system's share. The
    prediction is the one the load test makes for that level (a closed loop with fixed lengths simulated
    step by step, `tritonforge.builder.cpu_system`), so the term holds only what the model leaves out."""
    from tritonforge.builder.cpu_system import CpuSystem, predict_cpu
    from tritonforge.builder.predict import Workload
    from tritonforge.loadtest.predicted import busy_share, lockstep
    from tritonforge.loadtest.workload import WorkloadSpec

    ref = (system.get("machine") or {}).get("cpu_share")
    mbs = system["limits"]["max_batch_size"]
    without = CpuSystem.from_dict(
        {**system, "serving": {**system.get("serving", {}), "per_sequence_step_s": 0.0}}
    )
    config = report.get("config") or {}
    spec = WorkloadSpec(**config["workload"]) if config.get("workload") else None
    spawn = {lv.get("label"): lv.get("spawn_rate") for lv in config.get("levels") or []}
    out = []
    for lv in report.get("levels", []):
        b = lv.get("value")
        if lv.get("mode") != "concurrency" or not isinstance(b, (int, float)) or not 2 <= b <= mbs:
            continue
        pred, m = lv.get("prediction") or {}, lv.get("metrics") or {}
        share = busy_share(pred.get("cpu_share"), m)
        itl = (m.get("itl_ms") or {}).get("avg")
        w = pred.get("workload") or {}
        if not (share and ref and itl and w.get("isl") and w.get("osl")):
            continue
        in_lockstep = spec is not None and lockstep(spec, "concurrency", spawn.get(lv.get("label")))
        model = predict_cpu(
            without, Workload(int(w["isl"]), int(w["osl"]), concurrency=int(b)), mbs, None, in_lockstep
        )
        out.append((itl / 1e3 * share / ref - model.itl_ms / 1e3) / b)
    return out


def add_serving(paths: list[str], out: Path) -> int:
    system = json.loads(out.read_text())
    ref = (system.get("machine") or {}).get("cpu_share")
    points, reports = [], []
    for p in paths:
        report = json.loads(Path(p).read_text())
        got = serving_overhead(report, ref)
        if got is None:
            print(f"{p}: no c=1 level with Triton per-model metrics (run with --concurrency 1 --metrics-url)")
            return 2
        points.append({"report": f"{Path(p).parent.name}/{Path(p).name}", **got})
        reports.append(report)
    overhead = round(statistics.median(x["at_reference_s"] for x in points), 6)
    mbs = system["limits"]["max_batch_size"]
    per_user = [x for report in reports for x in per_user_overhead(report, ref, mbs)]
    per_user_s = round(max(0.0, statistics.median(per_user)), 6) if per_user else 0.0
    # the closed loop's ITL depends on the stack's time per request: predict it with the one just fitted
    system["serving"] = {
        **system.get("serving", {}),
        "request_overhead_s": overhead,
        "request_overhead_per_user_s": per_user_s,
    }
    excess = [x for report in reports for x in per_sequence_excess(report, system)]
    system["serving"] = {
        "request_overhead_s": overhead,
        "request_overhead_per_user_s": per_user_s,
        "request_overhead_per_user_points_s": [round(x, 6) for x in per_user],
        "per_sequence_step_s": round(max(0.0, statistics.median(excess)), 6) if excess else 0.0,
        "per_sequence_step_points_s": [round(x, 6) for x in excess],
        "how": "bench_cpu_system.py --serving-report: Triton's mean request durations of "
        + ", ".join(STACK_MODELS)
        + " at c=1, scaled to machine.cpu_share; their growth per other user at 2+ users over c=1 of the same "
        "report; the served ITL beyond the predicted one per sequence at 2+ users; medians over the reports",
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "points": points,
    }
    out.write_text(json.dumps(system, indent=1) + "\n")
    print(json.dumps(system["serving"], indent=1))
    return 0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the engine's default)")
    ap.add_argument("--quick", action="store_true", help="fewer rounds and shorter decodes")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="where to write the fitted system JSON")
    ap.add_argument(
        "--serving-report",
        nargs="+",
        default=None,
        metavar="REPORT",
        help="load-test report.json files with a c=1 level: add the serving stack's time per request to --out",
    )
    args = ap.parse_args(argv)
    if args.serving_report:
        return add_serving(args.serving_report, Path(args.out))
    from tritonforge.builder import planner

    demo = materialize("demo")
    info = json.loads((demo / "tritonforge_demo.json").read_text())
    hf = json.loads((demo / "config.json").read_text())
    shape = planner.model_shape(hf)
    load_before = os.getloadavg()
    t_start = time.time()
    eng = CpuEngine(demo, **LIMITS, num_threads=args.threads)
    vocab = int(hf["vocab_size"])
    rounds = 3 if args.quick else 7
    new = 24 if args.quick else 48
    Timed(eng, GenerationRequest([1, 5, 6, 7], 8, end_id=-1)).wait()  # warm-up
    # the share of a core the engine thread (this process's busiest) got while measuring, read as the load
    # test reads the served engine's: the prediction scales every time by this share over the served one
    meter = ShareMeter([os.getpid()])
    meter.start()
    dec, pre = measure(eng, vocab, rounds, new)
    cpu_share = meter.stop()
    eng.shutdown()
    system = {
        "system": "cpu-reference",
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "how": "benchmarks/bench_cpu_system.py: the demo model's CpuEngine in-process; medians per point",
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "torch_threads": args.threads or default_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
            "seconds": round(time.time() - t_start, 1),
            "cpu_share": round(cpu_share, 3) if cpu_share else None,
        },
        "model": {
            "name": "demo",
            "parameters": info["parameters"],
            "dtype": "float32",
            "matmul_flops_per_token": 2.0
            * (shape.num_layers * shape.layer_linear_params + shape.vocab_size * shape.hidden_size),
            "attn_flops_per_ctx_token": 4.0 * shape.num_layers * shape.q_dim,
        },
        "limits": LIMITS,
        "decode": fit_decode(dec),
        "prefill": fit_prefill(pre),
        "points": {"decode": dec, "prefill": pre},
    }
    Path(args.out).write_text(json.dumps(system, indent=1) + "\n")
    print(json.dumps({k: system[k] for k in ("decode", "prefill")}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
