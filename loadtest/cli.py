"""`tritonforge loadtest`: run a load test (the default command) or `compare` two reports."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from tritonforge.errors import UserError
from tritonforge.loadtest.parsing import PROTOCOLS, parse_duration, parse_number_list, parse_slo


class _DefaultGroup(click.Group):
    """A group whose first argument, when not a subcommand, goes to the `run` subcommand."""

    default = "run"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = [self.default, *args]
        return super().parse_args(ctx, args)


@click.group("loadtest", cls=_DefaultGroup)
def loadtest_group() -> None:
    """Load-test a Triton LLM deployment with Locust; compare reports to catch regressions.

    \b
    tritonforge loadtest --url http://127.0.0.1:8000 --model ensemble --users 8 --duration 60s -o out/load
    tritonforge loadtest --url ... --concurrency 1,2,4,8,16 --duration 30s --slo ttft=500ms,itl=50ms -o out/sweep
    tritonforge loadtest --url ... --request-rate 2,4,8 --workload isl=512,osl=128,repeat=0.2 -o out/open
    tritonforge loadtest compare out/base/report.json out/load/report.json
    tritonforge loadtest check out/sweep/report.json --min-of-prediction 75%

    `run` is the default subcommand; `tritonforge loadtest run --help` lists its options.
    """


def _levels(
    users: int | None, spawn_rate: float | None, concurrency: str | None, request_rate: str | None
) -> list:
    from tritonforge.loadtest.runner import Level

    given = [
        n
        for n, v in (("--users", users), ("--concurrency", concurrency), ("--request-rate", request_rate))
        if v
    ]
    if len(given) > 1:
        raise UserError(
            f"{' and '.join(given)} are exclusive: closed loop (--users N or --concurrency LIST) "
            "or open loop (--request-rate R)"
        )
    if request_rate:
        return [
            Level("rate", float(r)) for r in parse_number_list(request_rate, "--request-rate", integer=False)
        ]
    if concurrency:
        return [
            Level("concurrency", int(c), spawn_rate) for c in parse_number_list(concurrency, "--concurrency")
        ]
    if users is not None and users < 1:
        raise UserError("--users must be >= 1")
    return [Level("concurrency", users or 1, spawn_rate)]


def _command_line() -> list[str]:
    """The command as typed (`tritonforge loadtest ...` or `python -m tritonforge.loadtest ...`)."""
    args = sys.argv[1:]
    if "loadtest" in args[:1]:
        args = args[1:]
    return ["tritonforge", "loadtest", *args]


@loadtest_group.command("run")
@click.option("--url", required=True, help="Triton HTTP endpoint, e.g. http://127.0.0.1:8000.")
@click.option(
    "--model",
    default="ensemble",
    show_default=True,
    help="Model to load: ensemble, llm, or any generate-capable model.",
)
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    default="http-stream",
    show_default=True,
    help="http-stream (generate_stream, SSE), grpc-stream (decoupled gRPC) or http (generate).",
)
@click.option("--grpc-url", default=None, help="host:port of the gRPC endpoint (default: --url's port + 1).")
@click.option(
    "--metrics-url", default=None, help="Triton /metrics URL (default: --url's port + 2, /metrics)."
)
@click.option(
    "--users", type=int, default=None, help="Closed loop: concurrent users, one request in flight each."
)
@click.option(
    "--spawn-rate", type=float, default=None, help="Users started per second (default: all at once)."
)
@click.option("--concurrency", default=None, help="Sweep closed-loop levels, e.g. 1,2,4,8,16.")
@click.option("--request-rate", default=None, help="Open loop: Poisson arrivals, requests/s (a list sweeps).")
@click.option(
    "--max-inflight", type=int, default=0, help="Open loop: cap on requests in flight per process (0 = none)."
)
@click.option("--duration", default="60s", show_default=True, help="Measured time per level (after warm-up).")
@click.option(
    "--warmup", type=int, default=8, show_default=True, help="Warm-up requests before measuring (excluded)."
)
@click.option(
    "--repeat",
    type=int,
    default=1,
    show_default=True,
    help="Runs per level; metrics are medians across runs.",
)
@click.option(
    "--workers", type=int, default=0, show_default=True, help="Locust worker processes (0: one process)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Workload seed.")
@click.option(
    "--workload",
    default=None,
    help="key=value,... : isl, isl_std, osl, osl_std, fixed_output, prefix, "
    "prefix_groups, repeat, paraphrase, prompts, trace, temperature, top_k, top_p (or a JSONL trace path).",
)
@click.option(
    "--tokenizer",
    default="demo",
    show_default=True,
    help="Tokenizer dir (or demo, tiny) for prompts and re-tokenising.",
)
@click.option("--slo", default=None, help="Goodput SLOs, e.g. ttft=500ms,itl=50ms,e2e=10s.")
@click.option("--gpu", default=None, help="GPU type for cost and roofline (planner catalog), e.g. H100-SXM.")
@click.option(
    "--gpu-price", type=float, default=None, help="$ per GPU-hour (overrides the catalog and the spec)."
)
@click.option("--spec", "spec_path", default=None, help="Deployment spec (tier GPU, price, roofline).")
@click.option("--tier", default=None, help="Tier of the spec being measured (default: the first).")
@click.option(
    "--cpu-system",
    default=None,
    help="Fitted CPU system JSON for a cpu-reference tier's prediction "
    "(default: the checked-in one; write one with benchmarks/bench_cpu_system.py).",
)
@click.option(
    "--min-of-prediction",
    default=None,
    help="Exit 1 when a metric's measured performance is below this share of the prediction, e.g. 75%%.",
)
@click.option(
    "--repo", default=None, help="Served repository dir: its tritonforge.lock.json goes in the fingerprint."
)
@click.option(
    "--build-dir", default=None, help="Build dir whose build_manifest.json goes in the fingerprint."
)
@click.option("--baseline", default=None, help="report.json to compare with; exit 1 on a regression.")
@click.option(
    "--tolerance", multiple=True, help="Override a tolerance: metric=rel:abs, e.g. ttft=0.1:5ms (repeatable)."
)
@click.option(
    "--request-timeout",
    default="300s",
    show_default=True,
    help="Fail a request after this long without a response.",
)
@click.option(
    "-o", "--output", required=True, type=click.Path(file_okay=False), help="Directory for the reports."
)
@click.option("--json", "as_json", is_flag=True, help="Print report.json instead of the summary table.")
def run_command(**kw: Any) -> None:
    """Run a load test (the default subcommand: `tritonforge loadtest --url ...`)."""
    from tritonforge.loadtest import compare, predicted, workload
    from tritonforge.loadtest.models import Comparison, PredictionCheck
    from tritonforge.loadtest.report import summary_table, write_reports
    from tritonforge.loadtest.runner import LoadTestConfig, run_loadtest

    for name in ("repeat", "warmup", "workers", "max_inflight"):
        if kw[name] < (1 if name == "repeat" else 0):
            raise UserError(f"--{name.replace('_', '-')} must be >= {1 if name == 'repeat' else 0}")
    tolerances = compare.parse_tolerances(kw["tolerance"])
    min_of = (
        predicted.parse_min_of_prediction(kw["min_of_prediction"])
        if kw["min_of_prediction"] is not None
        else None
    )
    baseline = compare.load_report(kw["baseline"]) if kw["baseline"] else None
    if kw["cpu_system"]:  # asked for by name: a bad file is the user's error, before any request is sent
        from tritonforge.builder.cpu_system import load_system

        load_system(kw["cpu_system"])
    duration = parse_duration(kw["duration"], "--duration")
    if duration <= 0:
        raise UserError("--duration must be > 0, e.g. 60s")
    cfg = LoadTestConfig(
        url=kw["url"],
        model=kw["model"],
        output=Path(kw["output"]),
        protocol=kw["protocol"],
        grpc_url=kw["grpc_url"],
        metrics_url=kw["metrics_url"],
        levels=_levels(kw["users"], kw["spawn_rate"], kw["concurrency"], kw["request_rate"]),
        duration_s=duration,
        warmup=kw["warmup"],
        seed=kw["seed"],
        workload=workload.parse_workload(kw["workload"]),
        tokenizer=kw["tokenizer"],
        slo=parse_slo(kw["slo"]),
        gpu=kw["gpu"],
        gpu_price=kw["gpu_price"],
        spec_path=kw["spec_path"],
        tier=kw["tier"],
        repo=kw["repo"],
        build_dir=kw["build_dir"],
        repeat=kw["repeat"],
        workers=kw["workers"],
        max_inflight=kw["max_inflight"],
        request_timeout=parse_duration(kw["request_timeout"], "--request-timeout"),
        argv=_command_line(),
        cpu_system=kw["cpu_system"],
    )
    report, records = run_loadtest(cfg, progress=lambda msg: click.echo(f"[loadtest] {msg}", err=True))
    result = None
    if baseline is not None:
        result = compare.compare_reports(baseline, report, tolerances)
        report.comparison = Comparison.from_dict(
            {"baseline": kw["baseline"], "tolerances": list(kw["tolerance"]), **result}
        )
    gate = None
    if min_of is not None:
        gate = predicted.check(report, min_of)
        report.prediction_check = PredictionCheck.from_dict(gate)
    paths = write_reports(report, records, cfg.output)
    if kw["as_json"]:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        click.echo(summary_table(report))
        if result is not None:
            click.echo(compare.format_comparison(result, kw["baseline"], str(paths["json"])))
        if gate is not None:
            click.echo(_gate_text(gate))
        click.echo(f"reports: {paths['json']}, {paths['csv']}, {paths['html']}")
    measured = report.summary.requests if report.summary else 0
    if measured and report.summary is not None and report.summary.failed == measured:
        top = report.errors.top_messages[0] if report.errors and report.errors.top_messages else None
        what = f"{top.type}: {top.message}" if top else "no message"
        raise UserError(f"all {measured} requests failed ({what}); report in {cfg.output}")
    if (result is not None and result["regression"]) or (gate is not None and gate["failed"]):
        sys.exit(1)


@loadtest_group.command("locust", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("locust_args", nargs=-1, type=click.UNPROCESSED)
def locust_command(locust_args: tuple[str, ...]) -> None:
    """Run Locust itself with tritonforge's locustfile: a distributed master or worker process.

    \b
    tritonforge loadtest locust --master --expect-workers 4 --headless --host http://svc:8000 -u 64 -t 60s ...
    tritonforge loadtest locust --worker --master-host MASTER
    (https://docs.locust.io/en/stable/running-distributed.html; Locust's report only, no report.json)
    """
    import os

    from tritonforge.loadtest.runner import LOCUSTFILE

    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *locust_args]
    os.execv(sys.executable, argv)


@loadtest_group.command("workload")
@click.option("--workload", default=None, help="key=value,... as for `run` (or a JSONL trace path).")
@click.option("--tokenizer", default="demo", show_default=True, help="Tokenizer dir (or demo, tiny).")
@click.option("--seed", type=int, default=0, show_default=True, help="Workload seed.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="JSONL file to write.")
def workload_command(**kw: Any) -> None:
    """Write a load test's requests (JSONL) once, for `loadtest locust --workload-file` on several machines:
    Locust workers then read prompts instead of each building them."""
    from tritonforge.loadtest import workload

    spec = workload.parse_workload(kw["workload"])
    if spec.trace:
        items = workload.read_trace(spec.trace, spec, None)
        workload.count_input_tokens(items, workload.load_tokenizer(kw["tokenizer"]))
    else:
        items = workload.generate(spec, workload.load_tokenizer(kw["tokenizer"]), kw["seed"])
    workload.save(items, Path(kw["output"]))
    click.echo(f"{len(items)} requests: {kw['output']}")


def _gate_text(gate: dict[str, Any]) -> str:
    if not gate["checked"]:
        return "prediction check: no level has a prediction and a measurement to check"
    if not gate["failed"]:
        return f"prediction check: all {gate['checked']} metrics at or above {gate['min_of_prediction']:.0%} of the prediction"
    return "\n".join(f"BELOW PREDICTION: {line}" for line in gate["failures"])


def _require_predictions(gate: dict[str, Any], path: str) -> None:
    if not gate["checked"]:
        raise UserError(
            f"{path} has no predicted-vs-measured rows; run `tritonforge loadtest` with --spec SPEC.yaml "
            "or --repo DIR so each level carries a prediction"
        )


@loadtest_group.command("compare")
@click.argument("baseline", type=click.Path(dir_okay=False))
@click.argument("current", type=click.Path(dir_okay=False))
@click.option(
    "--tolerance",
    multiple=True,
    help="metric=rel:abs, e.g. ttft=0.1:5ms, output_tokens_per_s=5%%, error_rate=:0.02.",
)
@click.option(
    "--min-of-prediction",
    default=None,
    help="Also exit 1 when a metric of CURRENT is below this share of its prediction, e.g. 75%%.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare_command(
    baseline: str, current: str, tolerance: tuple[str, ...], min_of_prediction: str | None, as_json: bool
) -> None:
    """Compare CURRENT with BASELINE (report.json files); exit 1 on a regression.

    A metric regresses when it moves the bad way (throughput down; latency, errors up) by more than
    both its relative and its absolute tolerance. Percentiles are gated only with enough samples in
    both runs (p90: 50, p99: 300). Levels are matched by label (c=4, r=2).
    """
    from tritonforge.loadtest import compare, predicted

    tol = compare.parse_tolerances(tolerance)
    min_of = predicted.parse_min_of_prediction(min_of_prediction) if min_of_prediction is not None else None
    base = compare.load_report(baseline)
    cur = compare.load_report(current)
    result = compare.compare_reports(base, cur, tol)
    if not result["rows"]:
        raise UserError(
            f"{baseline} and {current} share no load level with metrics; run both with the same --users/--concurrency/--request-rate"
        )
    gate = None
    if min_of is not None:
        gate = predicted.check(cur, min_of)
        _require_predictions(gate, current)
        result["prediction_check"] = gate
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(compare.format_comparison(result, baseline, current))
        if gate is not None:
            click.echo(_gate_text(gate))
    if result["regression"] or (gate is not None and gate["failed"]):
        sys.exit(1)


@loadtest_group.command("check")
@click.argument("report", type=click.Path(dir_okay=False))
@click.option(
    "--min-of-prediction",
    required=True,
    help="Exit 1 when a metric's measured performance is below this share of its prediction, e.g. 75%%.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the check as JSON.")
def check_command(report: str, min_of_prediction: str, as_json: bool) -> None:
    """Gate REPORT (a report.json) on its predictions: exit 1 with one line per metric measured below
    --min-of-prediction of its prediction (throughput below it, or latency above prediction / share)."""
    from tritonforge.loadtest import compare, predicted

    min_of = predicted.parse_min_of_prediction(min_of_prediction)
    rep = compare.load_report(report)
    gate = predicted.check(rep, min_of)
    _require_predictions(gate, report)
    if as_json:
        click.echo(json.dumps(gate, indent=2))
    else:
        table = predicted.table(rep)
        if table:
            click.echo(table)
        click.echo(_gate_text(gate))
    if gate["failed"]:
        sys.exit(1)
