"""Run a load test: preflight, workload, warm-up, Locust per level and repeat, metrics, reports.

Locust runs as a subprocess (`python -m locust -f loadtest/locustfile.py --headless ...`), alone or
as a master with N workers, so this process never monkey-patches itself with gevent and the
locustfile stays usable on its own. Each load-generating process writes exact per-request records
and its CPU / event-loop figures; everything is computed from those.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tritonforge.errors import UserError
from tritonforge.loadtest import cost, cpushare, fingerprint, metrics, predicted, prom, protocols, workload
from tritonforge.loadtest.models import (
    Cost,
    LevelMetrics,
    LevelReport,
    LoadGenerator,
    PromptReuse,
    Report,
    Roofline,
    ServerMetrics,
    Summary,
    WorkloadSummary,
)
from tritonforge.loadtest.records import RequestRecord, read_jsonl

SCHEMA = "tritonforge.loadtest/1"
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
CPU_SATURATED = 90.0  # % of one core, mean over the run
LAG_WARN_MS = 50.0


@dataclass
class Level:
    """One load level: N closed-loop users, or an open-loop request rate."""

    mode: str  # "concurrency" | "rate"
    value: float
    spawn_rate: float | None = None

    @property
    def label(self) -> str:
        return f"c={int(self.value)}" if self.mode == "concurrency" else f"r={self.value:g}"


@dataclass
class LoadTestConfig:
    url: str
    model: str
    output: Path
    protocol: str = "http-stream"
    grpc_url: str | None = None
    metrics_url: str | None = None
    levels: list[Level] = field(default_factory=lambda: [Level("concurrency", 1)])
    duration_s: float = 60.0
    warmup: int = 8
    seed: int = 0
    workload: workload.WorkloadSpec = field(default_factory=workload.WorkloadSpec)
    tokenizer: str | None = "demo"
    slo: dict[str, float] = field(default_factory=dict)
    gpu: str | None = None
    gpu_price: float | None = None
    spec_path: str | None = None
    tier: str | None = None
    repo: str | None = None
    build_dir: str | None = None
    repeat: int = 1
    workers: int = 0
    max_inflight: int = 0
    request_timeout: float = 300.0
    argv: list[str] = field(default_factory=list)
    cpu_system: str | None = None  # fitted CPU system JSON for a cpu-reference tier's prediction
    batch_dim: bool = False  # set from the model's config (max_batch_size > 0): gRPC inputs get [1, 1]

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d["output"] = str(self.output)
        d["levels"] = [{"label": lv.label, **asdict(lv)} for lv in self.levels]
        d["workload"] = self.workload.to_dict()
        return d


def derived_url(url: str, offset: int, scheme: str | None = "http") -> str:
    """Triton's other ports: 8000 -> 8001 (gRPC) / 8002 (metrics); any other port + offset."""
    parts = urlsplit(url)
    port = (parts.port or 8000) + offset
    host = parts.hostname or "127.0.0.1"
    return f"{scheme}://{host}:{port}" if scheme else f"{host}:{port}"


# ------------------------------------------------------------------------------------------ locust


def locust_commands(
    cfg: LoadTestConfig,
    level: Level,
    repeat: int,
    workload_file: Path,
    raw_dir: Path,
    locust_dir: Path,
    item_offset: int = 0,
) -> tuple[list[str], list[list[str]]]:
    """(main command, worker commands) for one level and repeat, starting at workload item `item_offset`."""
    py = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
    processes = max(1, cfg.workers)
    if level.mode == "concurrency":
        users, rate = int(level.value), 0.0
        spawn = level.spawn_rate or float(users)
    else:
        users, rate = processes, float(level.value)
        spawn = float(users)
    name = f"{level.label}-r{repeat}"
    custom = [
        "--model",
        cfg.model,
        "--protocol",
        cfg.protocol,
        "--grpc-url",
        cfg.grpc_url or "",
        "--workload-file",
        str(workload_file),
        "--records-dir",
        str(raw_dir),
        "--level",
        level.label,
        "--repeat-index",
        str(repeat),
        "--request-timeout",
        f"{cfg.request_timeout:g}",
        "--seed",
        str(cfg.seed),
        "--request-rate",
        f"{rate:g}",
        "--max-inflight",
        str(cfg.max_inflight),
        "--warmup",
        "0",
        "--batch-dim",
        "1" if cfg.batch_dim else "0",
        "--item-offset",
        str(item_offset),
    ]
    main = (
        py
        + custom
        + [
            "--headless",
            "--host",
            cfg.url,
            "-u",
            str(users),
            "-r",
            f"{spawn:g}",
            "-t",
            f"{max(1, math.ceil(cfg.duration_s))}s",
            "--stop-timeout",
            f"{math.ceil(cfg.request_timeout)}",
            "--only-summary",
            "--loglevel",
            "WARNING",
            "--csv",
            str(locust_dir / name),
            "--html",
            str(locust_dir / f"{name}.html"),
        ]
    )
    workers: list[list[str]] = []
    if cfg.workers > 0:
        from tritonforge.ensembles.server import free_port

        port = free_port()
        main += [
            "--master",
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(port),
            "--expect-workers",
            str(cfg.workers),
            "--expect-workers-max-wait",
            "60",
        ]
        workers = [
            py
            + ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port), "--loglevel", "WARNING"]
            for _ in range(cfg.workers)
        ]
    return main, workers


def run_locust(
    cfg: LoadTestConfig, level: Level, repeat: int, workload_file: Path, out: Path, item_offset: int = 0
) -> dict[str, Any]:
    """Run Locust for one level/repeat from workload item `item_offset`; return its records and process stats."""
    name = f"{level.label}-r{repeat}"
    raw_dir = out / "raw" / name
    locust_dir = out / "locust"
    raw_dir.mkdir(parents=True, exist_ok=True)
    locust_dir.mkdir(parents=True, exist_ok=True)
    for old in raw_dir.glob("*"):
        old.unlink()
    main_cmd, worker_cmds = locust_commands(
        cfg, level, repeat, workload_file, raw_dir, locust_dir, item_offset
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log_path = locust_dir / f"{name}.log"
    procs: list[subprocess.Popen[bytes]] = []
    with log_path.open("wb") as log:
        try:
            main = subprocess.Popen(main_cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            procs.append(main)
            for i, cmd in enumerate(worker_cmds):
                wlog = (locust_dir / f"{name}-worker{i}.log").open("wb")
                procs.append(subprocess.Popen(cmd, stdout=wlog, stderr=subprocess.STDOUT, env=env))
                wlog.close()
            limit = cfg.duration_s + cfg.request_timeout + 120
            try:
                rc = main.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                rc = None
            for p in procs[1:]:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.terminate()
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    try:
                        p.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        p.kill()
    records = read_jsonl(sorted(raw_dir.glob("records-*.jsonl")))
    proc_stats = [_read_json(p) for p in sorted(raw_dir.glob("proc-*.json"))]
    if rc is None or (rc not in (0, 1) and not records) or not proc_stats:
        tail = " | ".join(
            line.strip() for line in log_path.read_text(errors="replace").splitlines()[-3:] if line.strip()
        )
        why = "timed out" if rc is None else f"exit {rc}"
        raise UserError(f"locust failed for {name} ({why}): {tail or 'no output'} (log: {log_path})")
    return {"records": records, "processes": proc_stats, "exit_code": rc, "log": str(log_path)}


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"process": path.name, "unreadable": True}


# ------------------------------------------------------------------------------------------ warm-up


def warm_up(cfg: LoadTestConfig, items: list[dict[str, Any]], concurrency: int) -> list[RequestRecord]:
    """Send the warm-up requests (threads, same protocol) and return their records (flagged)."""
    if not items:
        return []
    records: list[RequestRecord] = []
    lock = threading.Lock()
    queue = list(enumerate(items))

    def worker(wid: int) -> None:
        if cfg.protocol == "grpc-stream":
            client: Any = protocols.GrpcMux(
                cfg.grpc_url or derived_url(cfg.url, 1, None), cfg.model, cfg.request_timeout, cfg.batch_dim
            )
        else:
            client = protocols.StdlibHttp(cfg.url, cfg.request_timeout)
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    n, item = queue.pop(0)
                if cfg.protocol == "grpc-stream":
                    out = client.request(item, True)
                else:
                    out = protocols.http_request(client, cfg.model, item, cfg.protocol == "http-stream")
                rec = RequestRecord.from_outcome(
                    out,
                    item,
                    id=f"warmup/{n}",
                    level="warmup",
                    process="runner",
                    user=wid,
                    protocol=cfg.protocol,
                    model=cfg.model,
                    warmup=True,
                )
                with lock:
                    records.append(rec)
        finally:
            client.close()

    threads = [
        threading.Thread(target=worker, args=(i,), daemon=True)
        for i in range(max(1, min(concurrency, len(items))))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records


# ------------------------------------------------------------------------------------------ analysis


def generator_stats(
    procs: list[dict[str, Any]], level: Level, m: dict[str, Any], workers: int
) -> dict[str, Any]:
    """Load-generator CPU, event-loop lag and whether it kept up (saturation flags with reasons)."""
    per_proc = []
    reasons: list[str] = []
    warnings: list[str] = []
    for p in procs:
        cpu = p.get("cpu_percent") or []
        mean = sum(cpu) / len(cpu) if cpu else None
        per_proc.append(
            {
                "process": p.get("process"),
                "cpu_percent_mean": round(mean, 1) if mean is not None else None,
                "cpu_percent_max": max(cpu) if cpu else None,
                "loop_lag_ms_p99": p.get("loop_lag_ms_p99"),
                "loop_lag_ms_max": p.get("loop_lag_ms_max"),
                "requests_started": p.get("requests_started"),
                "open_loop_skipped": p.get("open_loop_skipped", 0),
                "unfinished_at_stop": p.get("unfinished_at_stop", 0),
            }
        )
        if mean is not None and mean >= CPU_SATURATED:
            reasons.append(f"{p.get('process')} averaged {mean:.0f}% CPU (>= {CPU_SATURATED:.0f}% of a core)")
        lag = p.get("loop_lag_ms_p99") or 0
        if lag > LAG_WARN_MS:
            warnings.append(
                f"{p.get('process')}: event-loop lag p99 {lag:.0f} ms; timings may be inflated by as much"
            )
    if level.mode == "rate":
        sent, n = m.get("sent_per_s"), m.get("requests", 0) + m.get("interrupted", 0)
        expected = (
            level.value * n / sent if sent else 0.0
        )  # arrivals a Poisson process at the nominal rate makes
        if sent is not None and n < expected - 3 * math.sqrt(expected):  # beyond Poisson noise (3 sigma)
            reasons.append(f"sent {sent:.2f} requests/s, scheduled {level.value:g} (below Poisson noise)")
        lag90 = (m.get("send_lag_ms") or {}).get("p90")
        if lag90 is not None and lag90 > LAG_WARN_MS:
            reasons.append(f"requests left {lag90:.0f} ms (p90) after their scheduled time")
        skipped = sum(p.get("open_loop_skipped", 0) for p in procs)
        if skipped:
            warnings.append(f"{skipped} arrivals dropped at the --max-inflight cap")
    cpus = os.cpu_count() or 1
    if workers + 1 > cpus:
        warnings.append(f"{workers} workers + master on {cpus} CPUs: the load generator competes with itself")
    return {"processes": per_proc, "saturated": bool(reasons), "reasons": reasons, "warnings": warnings}


def retokenize(records: list[RequestRecord], tok: workload.TokenizerAdapter | None) -> None:
    """Fill `output_tokens_retok` of successful records from their text."""
    if tok is None:
        return
    todo = [r for r in records if r.ok and r.text]
    for i in range(0, len(todo), 2048):
        batch = todo[i : i + 2048]
        for r, n in zip(batch, tok.count([r.text for r in batch]), strict=True):
            r.output_tokens_retok = n


# ------------------------------------------------------------------------------------------ main


Progress = Callable[[str], None]


def run_loadtest(cfg: LoadTestConfig, progress: Progress | None = None) -> tuple[Report, list[RequestRecord]]:
    """Run every level (and repeat) and return (report, all records)."""
    say = progress or (lambda _msg: None)
    if cfg.protocol not in protocols.PROTOCOLS:
        raise UserError(f"invalid --protocol {cfg.protocol!r}; use one of {', '.join(protocols.PROTOCOLS)}")
    cfg.url = cfg.url.rstrip("/")
    if "://" not in cfg.url:
        cfg.url = f"http://{cfg.url}"
    pre = fingerprint.preflight(cfg.url, cfg.model)
    cfg.batch_dim = int((pre.get("model_config") or {}).get("max_batch_size") or 0) > 0
    if cfg.protocol == "grpc-stream":
        cfg.grpc_url = cfg.grpc_url or derived_url(cfg.url, 1, None)
        _check_tcp(cfg.grpc_url, "--grpc-url")
    metrics_url = cfg.metrics_url or f"{derived_url(cfg.url, 2)}/metrics"
    repo_fp, lock_spec = fingerprint.repo_info(cfg.repo, cfg.build_dir)
    spec = _load_spec(cfg.spec_path, lock_spec)
    try:
        predictor, no_prediction = predicted.make_predictor(spec, cfg.tier, cfg.gpu, cfg.cpu_system)
    except (UserError, OSError, ValueError, KeyError) as exc:  # the measurement does not depend on it
        predictor, no_prediction = None, f"no prediction: {exc}"
    # a local CPU engine on a shared host runs as fast as the share of a core it gets: measured per level
    on_cpu_engine = predictor is not None and cost.on_cpu(spec, cfg.tier)
    meter = cpushare.ShareMeter(cpushare.engine_pids(cfg.url, cfg.repo) if on_cpu_engine else [])

    if cfg.workload.trace:  # validate the trace before loading a tokenizer (which may build one)
        items = workload.read_trace(cfg.workload.trace, cfg.workload, None)
        tok = workload.load_tokenizer(cfg.tokenizer) if cfg.tokenizer else None
        workload.count_input_tokens(items, tok)
    else:
        tok = workload.load_tokenizer(cfg.tokenizer)
        items = workload.generate(cfg.workload, tok, cfg.seed)
    # warm-up prompts are never measured prompts (a warm-up must not pre-fill a cache the run then hits)
    warm_items, items = workload.warmup_split(cfg.workload, tok, cfg.seed, cfg.warmup, items)
    cfg.output.mkdir(parents=True, exist_ok=True)
    workload_file = cfg.output / "workload.jsonl"
    workload.save(items, workload_file)
    notes: list[str] = []
    if cfg.workload.trace and cfg.warmup and warm_items and warm_items[0].get("kind") == "trace":
        notes.append(f"the trace's first {len(warm_items)} requests were the warm-up and are not measured")

    say(f"warm-up: {len(warm_items)} requests")
    first_users = int(cfg.levels[0].value) if cfg.levels[0].mode == "concurrency" else 4
    warm = warm_up(cfg, warm_items, min(8, first_users))
    if warm and all(not r.ok for r in warm):
        r = warm[0]
        raise UserError(
            f"every warm-up request failed ({r.error_type}: {r.error}); check --model, --protocol and the server log"
        )

    prompt_of = {it["index"]: it["prompt"] for it in items}
    sent: set[str] = {it["prompt"] for it in warm_items}  # every prompt sent so far
    all_records: list[RequestRecord] = list(warm)
    levels_out = []
    scrape_ok = True
    offset = 0  # each run continues the workload where the previous one stopped
    for level in cfg.levels:
        runs, servers, gens, shares = [], [], [], []
        for rep in range(cfg.repeat):
            say(f"{level.label}: run {rep + 1}/{cfg.repeat}, {cfg.duration_s:g}s ...")
            time.sleep(0.5)  # let the previous requests' last counters land before the "before" scrape
            before = prom.scrape(metrics_url)
            t0 = time.time()
            meter.start()
            result = run_locust(cfg, level, rep, workload_file, cfg.output, offset % max(1, len(items)))
            share = meter.stop()
            if share is not None:
                shares.append(share)
            time.sleep(0.3)  # let the server publish its last counters
            after = prom.scrape(metrics_url)
            scrape_ok = scrape_ok and before is not None and after is not None
            recs = result["records"]
            offset += max((p.get("requests_started") or 0 for p in result["processes"]), default=0) * max(
                1, cfg.workers
            )
            retokenize(recs, tok)
            all_records.extend(recs)
            m = metrics.level_metrics(recs, cfg.slo)
            m["token_check"] = metrics.token_check(recs)
            m["prompt_reuse"] = prompt_reuse(recs, prompt_of, sent, *prom.kv_reused_blocks(before, after))
            m["wall_s"] = round(time.time() - t0, 2)
            runs.append(m)
            servers.append(prom.diff(before, after, cfg.model))
            gens.append(generator_stats(result["processes"], level, m, cfg.workers))
            say(
                f"{level.label}: {m.get('completed', 0)} ok, {m.get('failed', 0)} failed, "
                f"{m.get('output_tokens_per_s', 0):,.1f} output tok/s, {m.get('requests_per_s', 0):.2f} req/s"
            )
        entry = _level_entry(cfg, level, runs, servers, gens, spec)
        wl = predicted.level_workload(cfg.workload, level.mode, level.value, entry.metrics)
        share = sorted(shares)[len(shares) // 2] if shares else None
        entry.prediction = predicted.level_prediction(
            predictor,
            no_prediction,
            wl,
            entry.metrics,
            predicted.lockstep(cfg.workload, level.mode, level.spawn_rate),
            share,
        )
        if share is not None:
            entry.prediction.cpu_share = round(share, 3)
        levels_out.append(entry)
    if not scrape_ok:
        notes.append(
            f"Triton metrics not read from {metrics_url}; pass --metrics-url (server metrics omitted)"
        )
    distinct = len({prompt_of[r.item] for r in all_records if not r.warmup and r.item in prompt_of})
    report = _report(
        cfg, pre, repo_fp, spec, items, warm_items, tok, levels_out, all_records, notes, metrics_url
    )
    if report.summary is not None:
        report.summary.prompt_reuse = _total_reuse(levels_out, distinct)
    return report, all_records


def prompt_reuse(
    records: list[RequestRecord],
    prompt_of: dict[int, str],
    sent: set[str],
    kv_blocks: float | None = None,
    kv_metric: str | None = None,
) -> dict[str, Any]:
    """How many of a run's requests re-sent a prompt sent before (adds the run's prompts to `sent`),
    with the KV-cache blocks the server reused over the run where it exports them."""
    measured = sorted((r for r in records if not r.warmup), key=lambda r: r.start)
    repeated, distinct = 0, set()
    for r in measured:
        prompt = prompt_of.get(r.item)
        if prompt is None:
            continue
        repeated += prompt in sent
        sent.add(prompt)
        distinct.add(prompt)
    out: dict[str, Any] = {
        "requests": len(measured),
        "distinct_prompts": len(distinct),
        "repeated_requests": repeated,
        "kv_reused_blocks": kv_blocks,
        "kv_metric": kv_metric,
    }
    return out


def _check_tcp(hostport: str, what: str) -> None:
    import socket

    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=3):
            pass
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot reach Triton's gRPC endpoint {hostport} ({exc}); fix {what}") from None


def _load_spec(spec_path: str | None, lock_spec: dict[str, Any] | None) -> Any:
    if spec_path:
        from tritonforge.builder.spec import load_spec

        return load_spec(spec_path)
    if lock_spec:
        from tritonforge.builder.spec import parse_spec

        return parse_spec(lock_spec, source="repository lock")
    return None


def _level_entry(
    cfg: LoadTestConfig,
    level: Level,
    runs: list[dict[str, Any]],
    servers: list[dict[str, Any]],
    gens: list[dict[str, Any]],
    spec: Any,
) -> LevelReport:
    m = LevelMetrics.from_dict(metrics.median_metrics(runs))
    gpu, count, spec_price = cost.resolve_gpu(cfg.gpu, spec, cfg.tier)
    if spec is not None and cost.on_cpu(spec, cfg.tier) and not cfg.gpu and cfg.gpu_price is None:
        gpu = None  # the spec's GPU does not serve this tier: no cost or roofline unless asked for
    tps = m.output_tokens_per_s
    conc = int(level.value) if level.mode == "concurrency" else None
    in_len = m.input_tokens_per_request.avg if m.input_tokens_per_request else None
    out_len = m.output_tokens_per_request.avg if m.output_tokens_per_request else None
    e2e_avg = (m.e2e_ms.avg if m.e2e_ms else None) or 0
    return LevelReport(
        label=level.label,
        mode=level.mode,
        value=level.value,
        metrics=m,
        runs=[LevelMetrics.from_dict(r) for r in runs] if len(runs) > 1 else [],
        server_metrics=ServerMetrics.from_dict(servers[0] if len(servers) == 1 else {"runs": servers}),
        load_generator=LoadGenerator.from_dict(
            {
                "saturated": any(g["saturated"] for g in gens),
                "reasons": sorted({r for g in gens for r in g["reasons"]}),
                "warnings": sorted({w for g in gens for w in g["warnings"]}),
                "runs": gens,
            }
        ),
        cost=Cost.from_dict(cost.cost_section(tps, gpu, count, cfg.gpu_price, spec_price)),
        roofline=Roofline.from_dict(
            cost.roofline_section(
                tps,
                conc or max(1, round((m.requests_per_s or 0) * e2e_avg / 1000)),
                in_len,
                out_len,
                gpu,
                spec,
                cfg.tier,
            )
        ),
    )


def _report(
    cfg: LoadTestConfig,
    pre: dict[str, Any],
    repo_fp: dict[str, Any],
    spec: Any,
    items: list[dict[str, Any]],
    warm_items: list[dict[str, Any]],
    tok: Any,
    levels: list[LevelReport],
    records: list[RequestRecord],
    notes: list[str],
    metrics_url: str,
) -> Report:
    measured = [r for r in records if not r.warmup and r.error_type != "interrupted"]
    best = max(levels, key=lambda lv: lv.metrics.output_tokens_per_s or 0)
    tc = metrics.token_check(measured)
    if tc.get("compared") and tc.get("requests_differing"):
        notes.append(
            f"output token counts: server reported {tc['server_total']}, re-tokenising gave "
            f"{tc['retokenized_total']} ({tc['requests_differing']} of {tc['compared']} requests differ); "
            "throughput uses the server's counts"
        )
    if not any(r.output_tokens_server is not None for r in measured):
        notes.append(
            "the server returned no num_output_tokens: output tokens are re-tokenised counts (may be inexact)"
        )
    if cfg.protocol == "http":
        notes.append("non-streaming protocol: TTFT and ITL are not measured (E2E only)")
    saturated = any(lv.load_generator is not None and lv.load_generator.saturated for lv in levels)
    if saturated:
        notes.append(
            "the load generator was saturated at some level (see load_generator.reasons); add --workers"
        )
    wraps = max(0, len(measured) - len(items))
    if wraps:
        notes.append(
            f"the workload has {len(items)} prompts and {len(measured)} requests were sent: prompts were reused "
            "(raise --workload prompts=N when testing a response cache)"
        )
    env_extra = {
        "gpu": None
        if spec is not None and cost.on_cpu(spec, cfg.tier) and not cfg.gpu
        else cost.resolve_gpu(cfg.gpu, spec, cfg.tier)[0],
        "tier_runtime": cost.tier_runtime(spec, cfg.tier),
        "spec": {"name": spec.name, "hash": spec.spec_hash(), "path": cfg.spec_path}
        if spec is not None
        else None,
        "metrics_url": metrics_url,
        "tokenizer": getattr(tok, "name", None),
    }
    return Report(
        schema_=SCHEMA,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        metric_definitions=metrics.DEFINITIONS,
        config=cfg.public(),
        environment=fingerprint.environment(pre, repo_fp, cfg.argv, env_extra),
        workload=WorkloadSummary.from_dict(
            {"spec": cfg.workload.to_dict(), **workload.summarize(items, warm_items)}
        ),
        levels=levels,
        summary=Summary(
            best_level=best.label,
            output_tokens_per_s=best.metrics.output_tokens_per_s,
            requests_per_s=best.metrics.requests_per_s,
            cost_per_1m_output_tokens=best.cost.cost_per_1m_output_tokens if best.cost else None,
            requests=sum(lv.metrics.requests for lv in levels),
            failed=sum(lv.metrics.failed for lv in levels),
            load_generator_saturated=saturated,
        ),
        token_check=tc,
        errors=metrics.error_summary(measured),
        notes=notes,
    )


def _total_reuse(levels: list[LevelReport], distinct: int) -> PromptReuse:
    """Prompt reuse over every run of every level (per-run figures, not the medians); `distinct`
    measured prompts in all."""
    runs = [r for lv in levels for r in (lv.runs or [lv.metrics])]
    parts = [r.prompt_reuse for r in runs if r.prompt_reuse is not None]
    kv = [p.kv_reused_blocks for p in parts if p.kv_reused_blocks is not None]
    return PromptReuse(
        requests=sum(p.requests for p in parts),
        distinct_prompts=distinct,
        repeated_requests=sum(p.repeated_requests for p in parts),
        kv_reused_blocks=sum(kv) if kv else None,
        kv_metric=next((p.kv_metric for p in parts if p.kv_metric), None),
    )
