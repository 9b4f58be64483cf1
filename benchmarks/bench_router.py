"""`llm` entry-model overhead through a real Triton (CPU), and in-process hit latency.

    python benchmarks/bench_router.py [-n 200] [--repeats 3] [--base REF [--swap]] [--server-env K=V]

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

`--base REF` also serves `llm_base`: the same entry model with its request-path files (llm.py,
tf_policy/service.py, tf_policy/semantic_worker.py) taken from git REF and everything else from the
working tree, and measures its bypass, miss and exact-hit paths interleaved with the current ones (an
A/B of a change to the request path in one server, under the same traffic; "A/B ... current - REF" lines
give current minus REF per repeat). The two entry models are not equally fast even with the same code
(on the 2-core host, identical bypass paths came out -0.1 to +0.3 ms apart at p50): `--swap` serves the
current path as `llm_base` and REF's as `llm`; half the difference of the two runs' A/B figures is the
change's effect, half their sum the slots'.

Each repeat runs every path n times, interleaved; overheads vs direct and their ratio are printed
per repeat and as median (spread min-max) over the repeats.

Also the in-process time of `EntryService.handle` for an exact hit (the server-side work without
HTTP). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.entry_repo import build_repo, entry_config, write_llm_model  # noqa: E402
from tritonforge.ensembles.server import TritonServer, free_ports  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# the entry model's request path: what `--base REF` takes from REF (everything else from the working tree)
REQUEST_PATH = {
    "model.py": "model_repo_templates/models/llm.py",
    "tf_policy/service.py": "model_repo_templates/tf_policy/service.py",
    "tf_policy/semantic_worker.py": "model_repo_templates/tf_policy/semantic_worker.py",
}


def write_entry(repo: Path, cfg: dict, name: str) -> None:
    """The entry model as the test helper writes it, plus the shared `tf_common` package the models
    import (vendored beside model.py like tf_policy) where the helper does not copy it yet."""
    write_llm_model(repo, cfg, name=name)
    common = ROOT / "model_repo_templates" / "tf_common"
    if common.is_dir():
        shutil.copytree(
            common,
            repo / name / "1" / "tf_common",
            ignore=shutil.ignore_patterns("__pycache__"),
            dirs_exist_ok=True,
        )


def write_base_model(repo: Path, cfg: dict, ref: str, name: str = "llm_base") -> None:
    """`name`: the entry model with its request-path files from git `ref`."""
    write_entry(repo, cfg, name)
    for dest, src in REQUEST_PATH.items():
        text = subprocess.run(
            ["git", "show", f"{ref}:{src}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
        (repo / name / "1" / dest).write_text(text)


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
    ap.add_argument("--base", metavar="REF", help="also serve llm_base: the request path from git REF")
    ap.add_argument(
        "--swap",
        action="store_true",
        help="with --base: serve the current request path as `llm_base` and REF's as `llm` (one model "
        "slot can be faster than the other; a pair of runs with and without --swap separates the two)",
    )
    ap.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for Triton and its models, e.g. TRITONFORGE_EMBED_RUNTIME=static (repeatable)",
    )
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="tf-bench-router-"))
    try:
        cfg = entry_config(router={"tier_timeout_s": 5.0})
        repo = build_repo(d / "repo", cfg)
        write_entry(repo, cfg, "llm")
        if a.base:
            write_base_model(repo, cfg, a.base)
            if a.swap:  # the current request path under the name `llm_base`, REF's under `llm`
                write_entry(repo, cfg, "llm_base")
                write_base_model(repo, cfg, a.base, name="llm")
        cur, ref = ("llm_base", "llm") if a.swap else ("llm", "llm_base")
        write_entry(repo, entry_config(cache={"enabled": False}), "llm_route")
        env = dict(kv.split("=", 1) for kv in a.server_env)
        server = TritonServer(repo, free_ports(), log_path=d / "triton.log", env=env)
        server.start()
        t0 = time.monotonic()
        server.wait_ready(300)
        print(f"Triton ready in {time.monotonic() - t0:.0f}s")
        c = Client(server.ports.http)
        n = a.n
        body = {"max_tokens": 8}
        pairs = seeds_and_paraphrases()
        entries = ["llm", "llm_base"] if a.base else ["llm"]  # A/B: both get the same traffic
        for seed in dict.fromkeys(sd for sd, _ in pairs):  # cached prompts for the semantic-hit path
            for m in entries:
                c.generate(m, {**body, "text_input": seed})
        time.sleep(2.0)  # insertions (embedding + index) happen after each response
        hits = iter([p for _, p in pairs])  # each paraphrase asked once
        paths = {
            "direct": lambda r, i: ("small_ensemble", {**body, "text_input": f"hello number {r}-{i}"}),
            "llm_route": lambda r, i: ("llm_route", {**body, "text_input": f"hello number {r}-{i}"}),
            "llm bypass": lambda r, i: (
                cur,
                {**body, "text_input": f"hello number {r}-{i}", "cache": "bypass"},
            ),
            "llm miss": lambda r, i: (
                cur,
                {**body, "text_input": f"a brand new question {r}-{i} about {i * 7}"},
            ),
            "llm exact hit": lambda r, i: (cur, {**body, "text_input": "What is the capital of France?"}),
        }
        if a.base:
            paths["base bypass"] = lambda r, i: (
                ref,
                {**body, "text_input": f"hello number {r}-{i}", "cache": "bypass"},
            )
            paths["base miss"] = lambda r, i: (
                ref,
                {**body, "text_input": f"a brand new question {r}-{i} about {i * 7}"},
            )
            paths["base exact hit"] = lambda r, i: (
                ref,
                {**body, "text_input": "What is the capital of France?"},
            )
            paths = {
                k: paths[k]
                for k in (
                    "direct",
                    "llm_route",
                    "llm bypass",
                    "base bypass",
                    "llm miss",
                    "base miss",
                    "llm exact hit",
                    "base exact hit",
                )
            }
        for f in paths.values():  # warm up (prompts the measured phase never sends)
            for i in range(10):
                c.generate(*f("warm", i))
        rows: dict[str, list[tuple[float, float]]] = {k: [] for k in paths}
        over: dict[str, list[tuple[float, float, float]]] = {k: [] for k in paths if k != "direct"}
        sem: dict[str, list[float]] = {m: [] for m in entries}
        statuses: dict[str, dict[str, int]] = {m: {} for m in entries}
        rng = random.Random(12)
        for r in range(a.repeats):
            times: dict[str, list[float]] = {k: [] for k in paths}
            for i in range(n):  # interleaved, so load drifts hit every path alike
                # in a new order each round: the work a miss leaves behind (its insertion) lands on a
                # different path each time, not always on the one measured after it
                order = list(paths)
                rng.shuffle(order)
                for k in order:
                    dt, out = c.generate(*paths[k](r, i))
                    times[k].append(dt)
                para = next(hits, None) if i % 4 == 0 else None  # a semantic hit every 4th round
                for m in rng.sample(entries, len(entries)) if para is not None else []:
                    dt, out = c.generate(m, {**body, "text_input": para})
                    st = out.get("cache_status", "?")
                    statuses[m][st] = statuses[m].get(st, 0) + 1
                    if st == "hit-semantic":
                        sem[m].append(dt)
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
        for m in entries:
            ts = sem[m]
            if ts:
                print(
                    f"  {m} semantic hit (tier would take 0.3 s): p50 {pct(ts, 50) * 1e3:.2f} ms, "
                    f"p99 {pct(ts, 99) * 1e3:.2f} ms (n={len(ts)}; statuses {statuses[m]})"
                )
            else:
                print(f"  {m} semantic hit: none served (statuses {statuses[m]})")
        if a.base:  # the A/B itself: current minus base, per repeat (negative: the change is faster)
            for path in ("bypass", "miss", "exact hit"):
                d50 = [x[0] - y[0] for x, y in zip(rows[f"llm {path}"], rows[f"base {path}"], strict=True)]
                d99 = [x[1] - y[1] for x, y in zip(rows[f"llm {path}"], rows[f"base {path}"], strict=True)]
                print(f"  A/B {path:9s} current - {a.base}: p50 {spread(d50)} ms, p99 {spread(d99)} ms")
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
