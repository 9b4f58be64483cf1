"""Embedding runtimes for the semantic cache: latency of one query and quality on the near-duplicate set.

    python benchmarks/bench_embedder.py [--runtimes st,torch,onnx,onnx-int8] [--repeats 3] [--threads 1]

Each runtime embeds all-MiniLM-L6-v2 (the packaged weights; the ONNX files are exported here once,
under $TRITONFORGE_CACHE). For every repeat, the runtimes take turns (interleaved, so load drifts hit
all alike) embedding each distinct prompt of benchmarks/data/near_duplicates.jsonl one at a time, memo
cleared: the cost of one semantic lookup's embedding. Printed per runtime: p50/p99 per repeat, the
median p50 with its spread (min-max over repeats) and its ratio to sentence-transformers; then, with
the vectors of that runtime, the labelled pairs: paraphrases served (must hit) and answer-changing
edits served (must not), cosine + verification, at the thresholds around the default (0.92); and how
close its vectors are to sentence-transformers' (cosine). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tritonforge.model_repo_templates.tf_policy.embedding import load_embedder  # noqa: E402
from tritonforge.model_repo_templates.tf_policy.params import normalize_prompt  # noqa: E402
from tritonforge.model_repo_templates.tf_policy.verify import verify  # noqa: E402

PAIRS = Path(__file__).resolve().parent / "data" / "near_duplicates.jsonl"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runtimes", default="st,torch,onnx,onnx-int8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--thresholds", default="0.85,0.9,0.92,0.95")
    a = ap.parse_args()
    rows = [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = sorted({normalize_prompt(t) for r in rows for t in (r["a"], r["b"])})
    embs = {}
    for rt in a.runtimes.split(","):
        t0 = time.perf_counter()
        try:
            embs[rt] = load_embedder("builtin:all-minilm-l6-v2", threads=a.threads, runtime=rt)
        except Exception as exc:  # noqa: BLE001 - report and go on with the others
            print(f"{rt}: cannot load ({type(exc).__name__}: {exc})")
            continue
        e = embs[rt]
        print(f"{rt}: loaded in {time.perf_counter() - t0:.1f}s (runtime {e.runtime}, {a.threads} thread(s))")
        if e.runtime != rt:
            print(f"  {rt} fell back to {e.runtime}: skipped")
            del embs[rt]
    for e in embs.values():  # warm up
        for t in texts[:20]:
            e.embed(t + " warm")
    p50s: dict[str, list[float]] = {k: [] for k in embs}
    print(f"one query at a time, {len(texts)} distinct prompts, {a.repeats} interleaved repeats:")
    for rep in range(a.repeats):
        for rt, e in embs.items():
            e._memo.clear()
            ts = []
            for t in texts:
                t1 = time.perf_counter()
                e.embed(t)
                ts.append(time.perf_counter() - t1)
            p50s[rt].append(pct(ts, 50))
            print(
                f"  repeat {rep + 1} {rt:10s} p50 {pct(ts, 50) * 1e3:6.2f} ms  p99 {pct(ts, 99) * 1e3:6.2f} ms"
            )
    base = statistics.median(p50s["st"]) if "st" in p50s else None
    print("summary (median p50 over repeats, spread min-max; ratio to st per repeat):")
    for rt, xs in p50s.items():
        ratio = ""
        if base is not None and rt != "st":
            rs = [x / s for x, s in zip(xs, p50s["st"], strict=True)]
            ratio = f"  ratio to st {statistics.median(rs):.2f} (spread {min(rs):.2f}-{max(rs):.2f})"
        print(
            f"  {rt:10s} p50 {statistics.median(xs) * 1e3:6.2f} ms "
            f"(spread {min(xs) * 1e3:.2f}-{max(xs) * 1e3:.2f}){ratio}"
        )
    why = [verify(r["b"], r["a"]) for r in rows]
    same = [i for i, r in enumerate(rows) if r["same"]]
    diff = [i for i, r in enumerate(rows) if not r["same"]]
    ref = None
    print(
        f"near-duplicate set: {len(same)} paraphrases (must hit), {len(diff)} answer-changing edits (must not)"
    )
    for rt, e in embs.items():
        vecs = dict(zip(texts, e.embed_batch(texts), strict=True))
        if rt == "st":
            ref = vecs
        sims = [float(vecs[normalize_prompt(r["a"])] @ vecs[normalize_prompt(r["b"])]) for r in rows]
        parts = []
        for th in [float(x) for x in a.thresholds.split(",")]:
            hits = sum(sims[i] >= th and why[i] is None for i in same)
            wrong = sum(sims[i] >= th and why[i] is None for i in diff)
            raw_wrong = sum(sims[i] >= th for i in diff)
            parts.append(
                f"@{th}: hit {hits}/{len(same)} ({hits / len(same):.1%}), wrong {wrong} "
                f"(cosine alone {raw_wrong})"
            )
        agree = ""
        if ref is not None and rt != "st":
            c = [float(vecs[t] @ ref[t]) for t in texts]
            agree = f"; cosine to st vectors mean {np.mean(c):.4f} min {min(c):.4f}"
        print(f"  {rt:10s} " + "; ".join(parts) + agree)
    print(f"load average {open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()
