"""Streaming vs non-streaming throughput through a real Triton (CPU engine), same repository, same load.

    python benchmarks/bench_streaming.py [--concurrency 8] [--seconds 20] [--repeats 3] [--max-tokens 64]
        [--intervals 1,2,4]

Emits examples/cpu-demo.yaml (the embedded demo model) into a temporary directory, serves it, and runs
`--concurrency` client threads that each send greedy requests (distinct prompts, `max_tokens` fixed,
`min_tokens` = `max_tokens` so every request generates the same number of tokens) over kept-alive HTTP
connections: non-streaming through `/generate`, streaming through `/generate_stream` (one SSE event per
response). Phases are interleaved (plain, stream, plain, stream, ...) so slow drifts of the shared machine
hit both modes alike. Prints output tokens/s per phase, TTFT p50 of the streams, the server's CPU time
per output token (tritonserver and its model stubs, from /proc: less sensitive to other load on a shared
machine than tokens/s), and the stream / non-stream ratios of each repeat with their spread. Asserts
nothing.

`--intervals` compares several `serving.stream_interval` values in one run: one server per value, all up
at once (an idle one costs no CPU), the non-streaming phase on the first, and every repeat runs the plain
phase and one streaming phase per value in an order that rotates from repeat to repeat; each value's ratio
is taken against the plain phase of the same repeat. Without it the emitted default is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import yaml

from tritonforge.builder.spec import load_spec
from tritonforge.ensembles.render import emit_files, write_repository
from tritonforge.ensembles.server import TritonServer, free_ports

ROOT = Path(__file__).resolve().parent.parent

WORDS = ("def", "class", "import", "return", "parse", "value", "args", "self", "path", "open", "list", "dict")


def prompt(i: int) -> str:
    """A distinct prompt per index (no two requests share a text)."""
    parts = [WORDS[(i // len(WORDS) ** k) % len(WORDS)] for k in range(4)]
    return f"# item {i}\n{parts[0]} {parts[1]}_{parts[2]}({parts[3]}):\n    "


def emit(out: Path, model: str, overrides: dict | None = None) -> Path:
    data = yaml.safe_load((ROOT / "examples" / "cpu-demo.yaml").read_text())
    data["tiers"][0]["model"] = model
    data["tiers"][0]["serving"].update(overrides or {})
    spec_path = out / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))
    files, _ = emit_files(load_spec(spec_path), out)
    write_repository(files, out / "repo")
    return out / "repo"


class Worker(threading.Thread):
    def __init__(
        self,
        port: int,
        stream: bool,
        stop_at: float,
        counter: list[int],
        start: int,
        step: int,
        max_tokens: int,
    ) -> None:
        super().__init__(daemon=True)
        self.port, self.stream, self.stop_at = port, stream, stop_at
        self.counter, self.index, self.step, self.max_tokens = counter, start, step, max_tokens
        self.tokens = 0
        self.requests = 0
        self.ttfts: list[float] = []
        self.error: str | None = None

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            while time.perf_counter() < self.stop_at:
                body = {
                    "text_input": prompt(self.index),
                    "max_tokens": self.max_tokens,
                    "min_tokens": self.max_tokens,
                    "top_k": 1,
                }
                self.index += self.step
                if self.stream:
                    body["stream"] = True
                t0 = time.perf_counter()
                path = "generate_stream" if self.stream else "generate"
                conn.request(
                    "POST",
                    f"/v2/models/ensemble/{path}",
                    json.dumps(body),
                    {"Content-Type": "application/json"},
                )
                r = conn.getresponse()
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}: {r.read()[:200]!r}")
                if self.stream:
                    first = True
                    for line in r:
                        if not line.startswith(b"data:"):
                            continue
                        event = json.loads(line[5:])
                        if "error" in event:
                            raise RuntimeError(event["error"])
                        n = int(event.get("num_output_tokens", 0) or 0)
                        if first and n:
                            self.ttfts.append(time.perf_counter() - t0)
                            first = False
                        self.tokens += n
                    r.read()
                else:
                    self.tokens += int(json.loads(r.read())["num_output_tokens"])
                self.requests += 1
        except Exception as exc:  # reported, the phase is then void
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group: the server and
    its model stubs."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def phase(
    port: int, stream: bool, seconds: float, concurrency: int, base: int, max_tokens: int, pgid: int = 0
) -> dict:
    cpu0 = group_cpu_s(pgid) if pgid else 0.0
    start = time.perf_counter()
    workers = [
        Worker(port, stream, start + seconds, [], base + i, concurrency, max_tokens)
        for i in range(concurrency)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start  # includes finishing the last in-flight requests
    errors = [w.error for w in workers if w.error]
    if errors:
        raise SystemExit(f"{'stream' if stream else 'plain'} phase failed: {errors[0]}")
    ttfts = sorted(t for w in workers for t in w.ttfts)
    tokens = sum(w.tokens for w in workers)
    return {
        "tok_s": tokens / elapsed,
        "cpu_ms_tok": 1000 * (group_cpu_s(pgid) - cpu0) / max(1, tokens) if pgid else float("nan"),
        "requests": sum(w.requests for w in workers),
        "ttft_p50_ms": 1000 * ttfts[len(ttfts) // 2] if ttfts else None,
    }


def run(
    plain_port: int, stream_ports: dict[str, int], pgids: dict[int, int], args: argparse.Namespace
) -> dict[str, list[float]]:
    """Interleaved repeats: the plain phase and one streaming phase per server, in a rotating order.
    Returns each label's throughput ratios, and under "<label> cpu" its server CPU-per-token ratios."""
    base = 0
    ratios: dict[str, list[float]] = {label: [] for label in stream_ports}
    ratios.update({f"{label} cpu": [] for label in stream_ports})
    phase(plain_port, False, 3, args.concurrency, 10_000_000, args.max_tokens)  # warm-up, its own prompts
    for j, port in enumerate(stream_ports.values()):
        phase(port, True, 3, args.concurrency, 20_000_000 + 1_000_000 * j, args.max_tokens)
    kinds: list[str | None] = [None, *stream_ports]  # None: the non-streaming phase
    for rep in range(args.repeats):
        shift = rep % len(kinds)
        order = kinds[shift:] + kinds[:shift]
        if rep % 2:
            order.reverse()
        results: dict[str | None, dict] = {}
        for kind in order:
            port = plain_port if kind is None else stream_ports[kind]
            results[kind] = phase(
                port, kind is not None, args.seconds, args.concurrency, base, args.max_tokens, pgids[port]
            )
            base += 100_000
        plain = results[None]
        parts = [
            f"repeat {rep + 1}: /generate {plain['tok_s']:.0f} tok/s ({plain['requests']} req, "
            f"server CPU {plain['cpu_ms_tok']:.2f} ms/token)"
        ]
        for label in stream_ports:
            r = results[label]
            ratio = r["tok_s"] / plain["tok_s"]
            ratios[label].append(ratio)
            ratios[f"{label} cpu"].append(r["cpu_ms_tok"] / plain["cpu_ms_tok"])
            parts.append(
                f"{label}: /generate_stream {r['tok_s']:.0f} tok/s ({r['requests']} req, "
                f"TTFT p50 {r['ttft_p50_ms']:.1f} ms, server CPU {r['cpu_ms_tok']:.2f} ms/token), "
                f"ratio {ratio:.3f}"
            )
        print(" | ".join(parts) + f" | load {os.getloadavg()[0]:.1f}", flush=True)
    return ratios


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--model", default="builtin:demo")
    ap.add_argument("--serving", default="{}", help="JSON merged into serving:, e.g. '{\"cpu_threads\": 1}'")
    ap.add_argument(
        "--intervals", default="", help="comma-separated serving.stream_interval values compared in one run"
    )
    args = ap.parse_args(argv)
    serving = json.loads(args.serving)
    intervals = [int(v) for v in args.intervals.split(",") if v.strip()]
    variants = {f"interval {v}": {**serving, "stream_interval": v} for v in intervals} or {"default": serving}
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory(prefix="tf-bench-stream-") as tmp, contextlib.ExitStack() as stack:
        ports: dict[str, int] = {}
        pgids: dict[int, int] = {}
        for i, (label, overrides) in enumerate(variants.items()):
            out = Path(tmp) / f"v{i}"
            out.mkdir()
            repo = emit(out, args.model, overrides)
            srv = stack.enter_context(TritonServer(repo, free_ports(), log_path=out / "triton.log"))
            srv.wait_ready(300)
            ports[label] = srv.ports.http
            assert srv.proc is not None
            pgids[srv.ports.http] = os.getpgid(srv.proc.pid)
        try:
            ratios = run(next(iter(ports.values())), ports, pgids, args)
        except SystemExit:  # a failed phase: show why before the temporary directory goes
            for i in range(len(variants)):
                log = (Path(tmp) / f"v{i}" / "triton.log").read_text(errors="replace").splitlines()
                fatal = [j for j, line in enumerate(log) if "Fatal Python error" in line]
                shown = log[fatal[0] : fatal[0] + 40] if fatal else log[-8:]  # a stub's crash, else the end
                print(f"--- server {i} ({list(variants)[i]}), triton.log:", *shown, sep="\n")
            raise
    for label in variants:
        values, cpu = ratios[label], ratios[f"{label} cpu"]
        print(
            f"{label}: streaming / non-streaming throughput at {args.concurrency} concurrent: median "
            f"{statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f}, "
            f"{len(values)} repeats); server CPU per token, streaming / non-streaming: median "
            f"{statistics.median(cpu):.3f} (min {min(cpu):.3f}, max {max(cpu):.3f})"
        )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
