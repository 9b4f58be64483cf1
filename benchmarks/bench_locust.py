"""How much load one Locust process makes: streamed requests/s and SSE events/s per CPU core.

Serves tests/fixtures/mock_llm (a Python-backend model that streams pre-made tokens with no delay)
on a real Triton, drives it with the tritonforge locustfile (one Locust process, http-stream) at
two output lengths, and measures the Locust process's own CPU. With Triton and Locust pinned to
different cores (when the machine has two), the CPU-seconds Locust spends per request and per SSE
event give a cost model  cpu_per_request = a + b * events  and hence what one fully busy core
sustains, and how many worker processes a TensorRT-LLM server at the published Llama-3.1-8B FP8
H100 throughput (~28,800 output tokens/s, one SSE event per token) needs.

Run: `python benchmarks/bench_locust.py [--duration 8] [--users 16] [--json OUT.json]`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tritonforge.ensembles.server import TritonServer, free_ports
from tritonforge.loadtest import workload
from tritonforge.loadtest.runner import Level, LoadTestConfig, run_locust

ROOT = Path(__file__).resolve().parent.parent
MOCK = ROOT / "tests" / "fixtures" / "mock_llm"
TARGET_TOKENS_PER_S = 28_800  # published TRT-LLM Llama-3.1-8B FP8 on one H100
HEADROOM = 0.7  # keep each load-generator process at <= 70% of a core


def _pin(pid: int, cpus: str) -> None:
    """Pin every thread of `pid` and of its children (taskset -a) to `cpus`."""
    import psutil

    for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        subprocess.run(["taskset", "-a", "-cp", cpus, str(p.pid)], capture_output=True, check=False)


SYNTHETIC_SERVER = r"""
import asyncio, json, sys

EVENT = b'data: {"model_name":"ensemble","model_version":"1","num_output_tokens":1,"text_output":" the"}\n\n'
CHUNK = b"%x\r\n%s\r\n" % (len(EVENT), EVENT)
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")), 0)
            body = json.loads(await reader.readexactly(length))
            writer.write(HEAD)
            for _ in range(int(body.get("max_tokens", 16))):
                writer.write(CHUNK)  # one send per event, like a server streaming token by token
                await asyncio.sleep(0)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


class _Synthetic:
    """A minimal asyncio SSE server (not Triton) that streams pre-made events as fast as it can, so that
    the Locust process, not the server, is the bottleneck: a direct measurement of saturation."""

    def __init__(self) -> None:
        from tritonforge.ensembles.server import free_port

        port = free_port()
        self.http_url = f"http://127.0.0.1:{port}"
        self.grpc_url = ""
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SYNTHETIC_SERVER, str(port)], stdout=subprocess.PIPE
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == b"ready"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def measure(
    server: TritonServer | _Synthetic, out: Path, users: int, osl: int, duration: float, tok, protocol: str
) -> dict:
    items = workload.generate(workload.parse_workload(f"isl=32,osl={osl},prompts=2000"), tok, seed=1)
    wl = out / f"workload-{osl}.jsonl"
    workload.save(items, wl)
    cfg = LoadTestConfig(
        url=server.http_url,
        model="ensemble",
        output=out,
        duration_s=duration,
        request_timeout=60,
        protocol=protocol,
        grpc_url=server.grpc_url,
    )
    level = Level("concurrency", users)
    res = run_locust(cfg, level, osl, wl, out)
    recs = [r for r in res["records"] if r.error_type != "interrupted"]
    ok = [r for r in recs if r.ok]
    span = max(r.end for r in recs) - min(r.start for r in recs)
    proc = res["processes"][0]
    cpu = proc.get("cpu_percent") or [0.0]
    cpu = cpu[1:-1] or cpu  # drop the start-up and stop samples
    cpu_mean = sum(cpu) / len(cpu)
    events = sum(r.chunks for r in ok)
    return {
        "osl": osl,
        "users": users,
        "requests": len(recs),
        "failed": len(recs) - len(ok),
        "requests_per_s": len(ok) / span,
        "events_per_s": events / span,
        "output_tokens_per_s": sum(r.output_tokens_server or 0 for r in ok) / span,
        "locust_cpu_percent": cpu_mean,
        "loop_lag_ms_p99": proc.get("loop_lag_ms_p99"),
        "events_per_cpu_second": events / span / max(cpu_mean / 100, 1e-6),
        "requests_per_cpu_second": len(ok) / span / max(cpu_mean / 100, 1e-6),
    }


def _show(r: dict, secs: float) -> None:
    print(
        f"  osl={r['osl']:4d} users={r['users']}: {r['requests_per_s']:8.1f} req/s {r['events_per_s']:9.1f} events/s, "
        f"Locust CPU {r['locust_cpu_percent']:5.1f}% -> {r['events_per_cpu_second']:8.0f} events and "
        f"{r['requests_per_cpu_second']:6.0f} requests per CPU-second ({secs:.0f}s)",
        flush=True,
    )


def _cost_model(runs: list[dict]) -> tuple[float, float]:
    """CPU seconds per request = a + b * events per request, from the two output lengths."""
    (r1, r2) = runs[0], runs[-1]
    c1, c2 = 1 / r1["requests_per_cpu_second"], 1 / r2["requests_per_cpu_second"]
    b = (c2 - c1) / (r2["osl"] - r1["osl"]) if r2["osl"] != r1["osl"] else c1 / r1["osl"]
    return max(0.0, c1 - b * r1["osl"]), b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    ap.add_argument("--users", type=int, default=16, help="closed-loop users")
    ap.add_argument("--osl", default="16,128", help="two output lengths (events per request)")
    ap.add_argument("--tokenizer", default="tiny", help="tokenizer for the prompts")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument(
        "--protocol", default="http-stream", choices=("http-stream", "grpc-stream"), help="streaming protocol"
    )
    ap.add_argument(
        "--skip-synthetic", action="store_true", help="skip the calibration against a minimal SSE server"
    )
    ap.add_argument("--no-pin", action="store_true", help="do not pin Triton and Locust to separate cores")
    args = ap.parse_args()
    osls = [int(x) for x in args.osl.split(",")]
    tok = workload.load_tokenizer(args.tokenizer)
    cpus = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="bench-locust-"))
    try:
        repo = tmp / "repo"
        shutil.copytree(MOCK, repo, symlinks=True)
        with TritonServer(repo, free_ports(), log_path=tmp / "triton.log") as server:
            server.wait_ready(120)
            pinned = cpus >= 2 and shutil.which("taskset") is not None and not args.no_pin
            if pinned:  # Triton (and its Python stubs) on core 0, this process and Locust on core 1
                assert server.proc is not None
                _pin(server.proc.pid, "0")
                os.sched_setaffinity(0, {1})
            runs = []
            print(f"against Triton serving the mock LLM ({args.protocol}):")
            for osl in osls:
                t0 = time.time()
                r = measure(server, tmp / "out", args.users, osl, args.duration, tok, args.protocol)
                runs.append(r)
                _show(r, time.time() - t0)
        saturated = []
        if args.protocol == "http-stream" and not args.skip_synthetic:
            synth = _Synthetic()
            try:
                if pinned:
                    _pin(synth.proc.pid, "0")
                print(
                    "against a minimal asyncio SSE server (events coalesce in each read: the cheap end for the client):"
                )
                for osl in osls:
                    t0 = time.time()
                    r = measure(synth, tmp / "synth", args.users, osl, args.duration, tok, args.protocol)
                    saturated.append(r)
                    _show(r, time.time() - t0)
            finally:
                synth.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    a, b = _cost_model(runs)
    print(
        f"\nLocust CPU cost ({args.protocol}): {a * 1e6:.0f} us per request + {b * 1e6:.1f} us per streamed event "
        f"(Triton and Locust {'pinned to separate cores' if pinned else 'sharing ' + str(cpus) + ' CPUs'})"
    )
    model = {
        "protocol": args.protocol,
        "us_per_request": a * 1e6,
        "us_per_event": b * 1e6,
        "pinned": pinned,
        "runs": runs,
        "synthetic_runs": saturated,
        "sizing": [],
    }
    if saturated:
        sa, sb = _cost_model(saturated)
        model.update(synthetic_us_per_request=sa * 1e6, synthetic_us_per_event=sb * 1e6)
        best = max(r["events_per_s"] for r in saturated)
        cpu = max(r["locust_cpu_percent"] for r in saturated)
        print(
            f"Coalesced events: one Locust process received {best:,.0f} events/s at {cpu:.0f}% CPU "
            f"({'Locust' if cpu >= 90 else 'the server'} was the limit); cost there {sa * 1e6:.0f} us per request + "
            f"{sb * 1e6:.1f} us per event"
        )
    print(
        f"To load {TARGET_TOKENS_PER_S:,} output tokens/s (1 SSE event per token), each process at <= {HEADROOM:.0%} CPU:"
    )
    for osl in (128, 512, 1024):
        rps = TARGET_TOKENS_PER_S / osl
        cores = rps * a + TARGET_TOKENS_PER_S * b
        per_core_events = osl / (a + b * osl)
        workers = max(1, math.ceil(cores / HEADROOM))
        model["sizing"].append(
            {
                "osl": osl,
                "requests_per_s": rps,
                "cores": cores,
                "workers": workers,
                "events_per_s_per_core": per_core_events,
            }
        )
        print(
            f"  OSL {osl:5d}: {rps:6.1f} req/s -> {cores:4.2f} cores of Locust -> --workers {workers} "
            f"(one core sustains ~{per_core_events:,.0f} events/s, ~{per_core_events / osl:,.0f} streams/s)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(model, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
