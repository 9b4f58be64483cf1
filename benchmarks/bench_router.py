"""`llm` entry-model overhead through a real Triton (CPU), and in-process hit latency.

    python benchmarks/bench_router.py [-n 200] [--repeats 3]

One Triton serves a mock tier model (ensemble contract, answers at once), `llm` (heuristic router +
memory cache with semantic matching) and `llm_route` (router only, cache off). Requests go one at a
time over a kept-alive HTTP connection to /generate, so transport costs are the same on every path
and differences between paths are what the entry model adds on the server:

- direct: the tier model itself;
- llm_route: routing + one BLS call;
- llm miss: routing + exact lookup + BLS, the semantic lookup (embedding + search) beside it on the
  semantic worker, the exact entry written after the response (unique prompts);
- llm bypass (`cache: bypass`): routing + BLS;
- llm exact hit: routing + exact lookup, no BLS;
- llm semantic hit: a paraphrase of a cached prompt while the tier would take 0.3 s: embedding +
  search + verification + replay, the tier call cancelled.

Each repeat runs every path n times, interleaved; overheads vs direct and their ratio are printed
per repeat and as median (spread min-max) over the repeats.

Also the in-process time of `EntryService.handle` for an exact hit (the server-side work without
HTTP). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.entry_repo import build_repo, entry_config, write_llm_model  # noqa: E402
from tritonforge.ensembles.server import TritonServer, free_ports  # noqa: E402


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
    from tritonforge.model_repo_templates.tf_policy.config import parse_entry_config
    from tritonforge.model_repo_templates.tf_policy.factory import build_service
    from tritonforge.model_repo_templates.tf_policy.params import parse_request

    cfg = parse_entry_config(entry_config())

    def tier(t, r, timeout, cancel):
        yield " answer", 1

    svc = build_service(cfg, ".", tier)
    r = parse_request(
        {
            "text_input": np.array([b"What is the capital of France?"], dtype=object),
            "max_tokens": np.array([8]),
        }
    )
    svc.handle(r, lambda x: None)
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = svc.handle(r, lambda x: None)
        ts.append(time.perf_counter() - t0)
        assert out.lookup.status == "hit-exact"
    svc.close()
    return ts


def seeds_and_paraphrases() -> list[tuple[str, str]]:
    """(cached prompt, paraphrase) pairs; both carry the slow-tier marker so the hit can win the race."""
    from benchmarks.bench_cache import SUBJECTS, TEMPLATES

    out = []
    for t, ps in TEMPLATES:
        for s in SUBJECTS:
            for p in ps:
                out.append((t.format(s=s) + SLOW, p.format(s=s) + SLOW))
    return out


SLOW = " #sleep-large_ensemble=0.3"  # the mock tier waits 0.3 s on these ("=" routes to large): a hit wins


def spread(xs: list[float], scale: float = 1e3, fmt: str = "{:+.2f}") -> str:
    return (
        fmt.format(statistics.median(xs) * scale)
        + " (spread "
        + fmt.format(min(xs) * scale)
        + " to "
        + fmt.format(max(xs) * scale)
        + ")"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200, help="requests per path per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="tf-bench-router-"))
    try:
        repo = build_repo(d / "repo", entry_config(router={"tier_timeout_s": 5.0}))
        write_llm_model(repo, entry_config(cache={"enabled": False}), name="llm_route")
        server = TritonServer(repo, free_ports(), log_path=d / "triton.log")
        server.start()
        t0 = time.monotonic()
        server.wait_ready(300)
        print(f"Triton ready in {time.monotonic() - t0:.0f}s")
        c = Client(server.ports.http)
        n = a.n
        body = {"max_tokens": 8}
        pairs = seeds_and_paraphrases()
        for seed in dict.fromkeys(sd for sd, _ in pairs):  # cached prompts for the semantic-hit path
            c.generate("llm", {**body, "text_input": seed})
        time.sleep(2.0)  # insertions (embedding + index) happen after each response
        hits = iter([p for _, p in pairs])  # each paraphrase asked once
        paths = {
            "direct": lambda r, i: ("small_ensemble", {**body, "text_input": f"hello number {r}-{i}"}),
            "llm_route": lambda r, i: ("llm_route", {**body, "text_input": f"hello number {r}-{i}"}),
            "llm bypass": lambda r, i: (
                "llm",
                {**body, "text_input": f"hello number {r}-{i}", "cache": "bypass"},
            ),
            "llm miss": lambda r, i: (
                "llm",
                {**body, "text_input": f"a brand new question {r}-{i} about {i * 7}"},
            ),
            "llm exact hit": lambda r, i: ("llm", {**body, "text_input": "What is the capital of France?"}),
        }
        for f in paths.values():  # warm up (prompts the measured phase never sends)
            for i in range(10):
                c.generate(*f("warm", i))
        rows: dict[str, list[tuple[float, float]]] = {k: [] for k in paths}
        over: dict[str, list[tuple[float, float, float]]] = {k: [] for k in paths if k != "direct"}
        sem: list[float] = []
        statuses: dict[str, int] = {}
        for r in range(a.repeats):
            times: dict[str, list[float]] = {k: [] for k in paths}
            for i in range(n):  # interleaved, so load drifts hit every path alike
                for k, f in paths.items():
                    dt, out = c.generate(*f(r, i))
                    times[k].append(dt)
                para = next(hits, None) if i % 4 == 0 else None  # a semantic hit every 4th round
                if para is not None:
                    dt, out = c.generate("llm", {**body, "text_input": para})
                    st = out.get("cache_status", "?")
                    statuses[st] = statuses.get(st, 0) + 1
                    if st == "hit-semantic":
                        sem.append(dt)
            b50, b99 = pct(times["direct"], 50), pct(times["direct"], 99)
            for k, ts in times.items():
                rows[k].append((pct(ts, 50), pct(ts, 99)))
                if k != "direct":
                    over[k].append((pct(ts, 50) - b50, pct(ts, 99) - b99, pct(ts, 50) / b50))
            print(
                f"repeat {r + 1}: direct p50 {b50 * 1e3:.2f} ms p99 {b99 * 1e3:.2f} ms; "
                + "; ".join(
                    f"{k} p50 +{(pct(ts, 50) - b50) * 1e3:.2f}" for k, ts in times.items() if k != "direct"
                )
            )
        print(
            f"{n} sequential requests per path per repeat, {a.repeats} interleaved repeats "
            "(client-observed /generate latency; transport identical; semantic cache ON in `llm`):"
        )
        for k in paths:
            p50s = [x[0] for x in rows[k]]
            p99s = [x[1] for x in rows[k]]
            line = f"  {k:14s} p50 {spread(p50s, fmt='{:.2f}')} ms  p99 {spread(p99s, fmt='{:.2f}')} ms"
            if k != "direct":
                line += (
                    f"\n  {'':14s} vs direct: p50 {spread([o[0] for o in over[k]])} ms, "
                    f"p99 {spread([o[1] for o in over[k]])} ms, "
                    f"p50 ratio {spread([o[2] for o in over[k]], 1, '{:.3f}')}"
                )
            print(line)
        if sem:
            print(
                f"  llm semantic hit (tier would take 0.3 s): p50 {pct(sem, 50) * 1e3:.2f} ms, "
                f"p99 {pct(sem, 99) * 1e3:.2f} ms (n={len(sem)}; statuses {statuses})"
            )
        else:
            print(f"  llm semantic hit: none served (statuses {statuses})")
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
