"""`llm` entry-model overhead through a real Triton (CPU), and in-process hit latency.

    python benchmarks/bench_router.py [-n 300]

One Triton serves a mock tier model (ensemble contract, answers at once), `llm` (heuristic router +
memory cache with semantic matching) and `llm_route` (router only, cache off). Requests go one at a
time over a kept-alive HTTP connection to /generate, so transport costs are the same on every path
and differences between paths are what the entry model adds on the server:

- direct: the tier model itself;
- llm_route: routing + one BLS call;
- llm miss: routing + exact lookup + embedding + semantic search + BLS + store (unique prompts);
- llm bypass (`cache: bypass`): routing + BLS;
- llm exact hit: routing + exact lookup, no BLS.

Also the in-process time of `EntryService.handle` for an exact hit (the server-side work without
HTTP). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_llm_entry_repo import build_repo, entry_config, write_llm_model  # noqa: E402
from tritonforge.builder.server import TritonServer, free_ports  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Client:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def generate(self, model: str, body: dict) -> tuple[float, dict]:
        data = json.dumps(body)
        t0 = time.perf_counter()
        self.conn.request("POST", f"/v2/models/{model}/generate", data, {"Content-Type": "application/json"})
        r = self.conn.getresponse()
        out = r.read()
        dt = time.perf_counter() - t0
        if r.status != 200:
            raise RuntimeError(f"{model}: HTTP {r.status} {out[:200]!r}")
        return dt, json.loads(out)


def in_process_hit(n: int) -> list[float]:
    from tritonforge.ensembles.policy.config import parse_entry_config
    from tritonforge.ensembles.policy.factory import build_service
    from tritonforge.ensembles.policy.params import parse_request

    cfg = parse_entry_config(entry_config())

    def tier(t, r, timeout, cancel):
        yield " answer", 1

    svc = build_service(cfg, ".", tier)
    r = parse_request({"text_input": np.array([b"What is the capital of France?"], dtype=object),
                       "max_tokens": np.array([8])})  # fmt: skip
    svc.handle(r, lambda x: None)
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = svc.handle(r, lambda x: None)
        ts.append(time.perf_counter() - t0)
        assert out.lookup.status == "hit-exact"
    svc.close()
    return ts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=300)
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="tf-bench-router-"))
    try:
        repo = build_repo(d / "repo", entry_config())
        write_llm_model(repo, entry_config(cache={"enabled": False}), name="llm_route")
        server = TritonServer(repo, free_ports(), log_path=d / "triton.log")
        server.start()
        t0 = time.monotonic()
        server.wait_ready(300)
        print(f"Triton ready in {time.monotonic() - t0:.0f}s")
        c = Client(server.ports.http)
        n = a.n
        body = {"max_tokens": 8}
        paths = {
            "direct": lambda i: ("small_ensemble", {**body, "text_input": f"hello number {i}"}),
            "llm_route": lambda i: ("llm_route", {**body, "text_input": f"hello number {i}"}),
            "llm bypass": lambda i: ("llm", {**body, "text_input": f"hello number {i}", "cache": "bypass"}),
            "llm miss": lambda i: ("llm", {**body, "text_input": f"a brand new question {i} about {i * 7}"}),
            "llm exact hit": lambda i: ("llm", {**body, "text_input": "What is the capital of France?"}),
        }
        times: dict[str, list[float]] = {k: [] for k in paths}
        for f in paths.values():  # warm up
            for i in range(10):
                c.generate(*f(-1 - i))
        for i in range(n):  # interleaved, so load drifts hit every path alike
            for k, f in paths.items():
                dt, out = c.generate(*f(i))
                times[k].append(dt)
        base50, base99 = pct(times["direct"], 50), pct(times["direct"], 99)
        print(f"{n} sequential requests per path (client-observed /generate latency; transport identical):")
        for k, ts in times.items():
            p50, p99 = pct(ts, 50), pct(ts, 99)
            extra = (
                ""
                if k == "direct"
                else f"   overhead vs direct: p50 +{(p50 - base50) * 1e3:.2f} ms, p99 +{(p99 - base99) * 1e3:.2f} ms"
            )
            print(f"  {k:14s} p50 {p50 * 1e3:6.2f} ms  p99 {p99 * 1e3:6.2f} ms{extra}")
        server.stop()
        hit = in_process_hit(max(n, 200))
        print(
            f"in-process EntryService.handle exact hit: p50 {pct(hit, 50) * 1e3:.3f} ms, p99 {pct(hit, 99) * 1e3:.3f} ms"
        )
        print(
            f"load average {open('/proc/loadavg').read().split()[0]} on {__import__('os').cpu_count()} cores"
        )
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
