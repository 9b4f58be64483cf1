"""Streaming vs non-streaming throughput through a real Triton (CPU engine), same repository, same load.

    python benchmarks/bench_streaming.py [--concurrency 8] [--seconds 20] [--repeats 3] [--max-tokens 64]

Emits examples/cpu-demo.yaml (the embedded demo model) into a temporary directory, serves it, and runs
`--concurrency` client threads that each send greedy requests (distinct prompts, `max_tokens` fixed,
`min_tokens` = `max_tokens` so every request generates the same number of tokens) over kept-alive HTTP
connections: non-streaming through `/generate`, streaming through `/generate_stream` (one SSE event per
response). Phases are interleaved (plain, stream, plain, stream, ...) so slow drifts of the shared machine
hit both modes alike. Prints output tokens/s per phase, TTFT p50 of the streams, and the
stream / non-stream ratio of each repeat with its spread. Asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import json
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


def phase(port: int, stream: bool, seconds: float, concurrency: int, base: int, max_tokens: int) -> dict:
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
    return {
        "tok_s": sum(w.tokens for w in workers) / elapsed,
        "requests": sum(w.requests for w in workers),
        "ttft_p50_ms": 1000 * ttfts[len(ttfts) // 2] if ttfts else None,
    }


def run(port: int, args: argparse.Namespace) -> list[float]:
    base = 0
    ratios = []
    phase(port, False, 3, args.concurrency, 10_000_000, args.max_tokens)  # warm-up, its own prompts
    phase(port, True, 3, args.concurrency, 20_000_000, args.max_tokens)
    for rep in range(args.repeats):
        results = {}
        for stream in (False, True) if rep % 2 == 0 else (True, False):
            results[stream] = phase(port, stream, args.seconds, args.concurrency, base, args.max_tokens)
            base += 100_000
        ratio = results[True]["tok_s"] / results[False]["tok_s"]
        ratios.append(ratio)
        print(
            f"repeat {rep + 1}: /generate {results[False]['tok_s']:.0f} tok/s ({results[False]['requests']} req), "
            f"/generate_stream {results[True]['tok_s']:.0f} tok/s ({results[True]['requests']} req, "
            f"TTFT p50 {results[True]['ttft_p50_ms']:.1f} ms), ratio {ratio:.3f}",
            flush=True,
        )
    return ratios


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--model", default="builtin:demo")
    ap.add_argument("--serving", default="{}", help="JSON merged into serving:, e.g. '{\"cpu_threads\": 1}'")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tf-bench-stream-") as tmp:
        repo = emit(Path(tmp), args.model, json.loads(args.serving))
        with TritonServer(repo, free_ports(), log_path=Path(tmp) / "triton.log") as srv:
            srv.wait_ready(300)
            ratios = run(srv.ports.http, args)
    print(
        f"streaming / non-streaming throughput at {args.concurrency} concurrent: median "
        f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}, {len(ratios)} repeats)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
