"""Response-cache benchmarks (no Triton): lookup latency at scale, Redis exact hits, workload hit rates.

    python benchmarks/bench_cache.py [--sizes 10000,100000] [--requests 1000] [--redis] [--pairs-only]

1. Semantic lookup including the embedding of the query (all-MiniLM-L6-v2, 1 thread, the runtime the
   `llm` model would pick: ONNX Runtime int8 when installed) against an
   index of N entries, p50/p99. The N stored vectors are random unit vectors (embedding 100k real
   prompts would take ~10 minutes on 2 cores); the queries are real prompts embedded per lookup.
2. Exact-hit lookup p50 (memory backend; and Redis with --redis, which starts a redis-server).
3. Hit rates on a synthetic workload: 55% new prompts, 30% exact repeats (some with different
   whitespace: the exact key is the prompt's bytes, so those are for the semantic layer), 15%
   paraphrases of earlier prompts; with the false-hit rate (a semantic hit whose cached answer
   belongs to a different question), with and without semantic verification.
4. The labelled near-duplicate set (benchmarks/data/near_duplicates.jsonl, made by
   make_near_duplicates.py): paraphrase hit rate and wrong-answer rate, by kind, cosine alone vs
   cosine + verification.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tritonforge.model_repo_templates.tf_policy.cache import CacheEntry, ResponseCache  # noqa: E402
from tritonforge.model_repo_templates.tf_policy.config import CacheConfig  # noqa: E402
from tritonforge.model_repo_templates.tf_policy.embedding import load_embedder  # noqa: E402
from tritonforge.model_repo_templates.tf_policy.index import SemanticIndex  # noqa: E402
from tritonforge.model_repo_templates.tf_policy.memory_backend import MemoryBackend  # noqa: E402
from tritonforge.model_repo_templates.tf_policy.metrics import MemoryMetrics  # noqa: E402
from tritonforge.model_repo_templates.tf_policy.params import (  # noqa: E402
    exact_key,
    namespace,
    normalize_prompt,
    parse_request,
)
from tritonforge.model_repo_templates.tf_policy.verify import verify  # noqa: E402

PAIRS = Path(__file__).resolve().parent / "data" / "near_duplicates.jsonl"


def req(text: str, max_tokens: int = 64):
    return parse_request(
        {"text_input": np.array([text.encode()], dtype=object), "max_tokens": np.array([max_tokens])}
    )


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def ms(xs: list[float]) -> str:
    return f"p50 {pct(xs, 50) * 1e3:.2f} ms, p99 {pct(xs, 99) * 1e3:.2f} ms (n={len(xs)})"


# --- synthetic questions with paraphrases ----------------------------------------------------------
SUBJECTS = [
    "France",
    "Japan",
    "Brazil",
    "Kenya",
    "Canada",
    "Norway",
    "Egypt",
    "Chile",
    "Vietnam",
    "Poland",
    "Python",
    "Rust",
    "Go",
    "Java",
    "Haskell",
    "Kotlin",
    "Swift",
    "Elixir",
    "Scala",
    "Ruby",
    "photosynthesis",
    "plate tectonics",
    "inflation",
    "the French Revolution",
    "black holes",
    "vaccines",
    "blockchains",
    "the immune system",
    "climate change",
    "quantum entanglement",
]
TEMPLATES = [
    (
        "Tell me three interesting facts about {s}.",
        ["Give me 3 interesting facts about {s}.", "What are three interesting facts about {s}?"],
    ),
    ("Write a short poem about {s}.", ["Compose a short poem about {s}.", "Write a brief poem on {s}."]),
    (
        "Explain {s} to a ten year old.",
        ["Explain {s} to a 10-year-old child.", "How would you explain {s} to a ten-year-old?"],
    ),
    (
        "What are the main criticisms of {s}?",
        ["What are the biggest criticisms of {s}?", "What main criticisms are there of {s}?"],
    ),
    (
        "Summarize the history of {s} in two sentences.",
        [
            "Give a two-sentence summary of the history of {s}.",
            "In two sentences, summarize the history of {s}.",
        ],
    ),
]


ANGLES = ["", " for beginners", " in economics", " in the 19th century", " in everyday life", " in industry"]


def workload(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(prompt, question id, kind) with kind new | repeat | paraphrase.

    Questions are templates x subjects x angles (900 distinct); many differ only in the angle
    ("... Python for beginners" vs "... Python in industry"), a hard case for false semantic hits.
    """
    rng = random.Random(seed)
    subjects = [s + a for s in SUBJECTS for a in ANGLES]
    questions = [
        (t.format(s=s), [p.format(s=s) for p in ps], f"{i}:{s}")
        for i, (t, ps) in enumerate(TEMPLATES)
        for s in subjects
    ]
    rng.shuffle(questions)
    seen: list[tuple[str, list[str], str]] = []
    out = []
    for _ in range(n):
        r = rng.random()
        if seen and r < 0.30:
            q = rng.choice(seen)
            text = q[0] if rng.random() < 0.7 else "  " + q[0].replace(" ", "  ") + "\n"  # whitespace differs
            out.append((text, q[2], "repeat"))
        elif seen and r < 0.45:
            q = rng.choice(seen)
            out.append((rng.choice(q[1]), q[2], "paraphrase"))
        else:
            q = questions[len(seen) % len(questions)] if len(seen) < len(questions) else rng.choice(questions)
            if q not in seen:
                seen.append(q)
            out.append((q[0], q[2], "new"))
    return out


def hit_rates(emb, n: int, threshold: float, verified: bool = True) -> None:
    m = MemoryMetrics()
    cfg = CacheConfig(enabled=True, semantic=True, similarity_threshold=threshold, capacity=100_000)
    index = SemanticIndex(emb.dim)
    cache = ResponseCache(
        cfg,
        MemoryBackend(100_000, 3600, on_evict=index.remove, metrics=m),
        emb.embed,
        index,
        m,
        verifier=verify if verified else None,
    )
    counts: dict[str, int] = {}
    by_kind: dict[str, dict[str, int]] = {}
    false_hits = 0
    for text, qid, kind in workload(n):
        r = req(text)
        look = cache.lookup(r, "small")
        counts[look.status] = counts.get(look.status, 0) + 1
        by_kind.setdefault(kind, {}).setdefault(look.status, 0)
        by_kind[kind][look.status] += 1
        if look.entry is not None and look.entry.text != qid:
            false_hits += 1
        if look.status == "miss":
            cache.store(look, r, "small", "", qid, 10)
    total = sum(counts.values())
    label = "cosine + verification" if verified else "cosine alone"
    print(
        f"  threshold {threshold}, {label}: "
        + ", ".join(f"{k} {v / total:.1%}" for k, v in sorted(counts.items()))
        + f"; false hits {false_hits} ({false_hits / total:.2%})"
    )
    for kind, st in sorted(by_kind.items()):
        k_total = sum(st.values())
        print(
            f"    {kind:10s} ({k_total}): "
            + ", ".join(f"{k} {v / k_total:.0%}" for k, v in sorted(st.items()))
        )


def scale(emb, sizes: list[int], queries: int, repeats: int = 1) -> None:
    rng = np.random.default_rng(0)
    prompts = [t.format(s=s) for t, _ in TEMPLATES for s in SUBJECTS]
    for n in sizes:
        cfg = CacheConfig(enabled=True, semantic=True, similarity_threshold=0.92, capacity=n + 10)
        index = SemanticIndex(emb.dim)
        backend = MemoryBackend(n + 10, 3600, on_evict=index.remove)
        cache = ResponseCache(cfg, backend, emb.embed, index)
        ns = namespace("small", "", req("x").params)
        t0 = time.perf_counter()
        vecs = rng.normal(size=(n, emb.dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        keys = [f"{ns}:synthetic{i}" for i in range(n)]
        index.bulk_add(ns, keys, vecs)
        for k in keys:
            backend.put(k, CacheEntry("x", 1, "small", ns, k))
        build = time.perf_counter() - t0
        # real cached prompts too, so paraphrase queries can hit
        for p in prompts:
            look = cache.lookup(req(p), "small")
            cache.store(look, req(p), "small", "", "answer", 1)
        hit_p50s: list[float] = []
        for rep in range(repeats):
            miss_t, hit_t, embed_t, search_t = [], [], [], []
            for i in range(queries):
                j = rep * queries + i  # every repeat asks new queries (nothing from the embedder's memo)
                q = f"{prompts[j % len(prompts)]} Please answer in {j} words."  # not in the cache: full lookup
                t1 = time.perf_counter()
                look = cache.lookup(req(q), "small")
                miss_t.append(time.perf_counter() - t1)
                t1 = time.perf_counter()
                v = emb.embed(q + " again")
                embed_t.append(time.perf_counter() - t1)
                t1 = time.perf_counter()
                index.search(ns, v, k=3)
                search_t.append(time.perf_counter() - t1)
                t, ps = TEMPLATES[j % len(TEMPLATES)]
                q = ps[j % 2].format(s=SUBJECTS[j % len(SUBJECTS)])
                emb._memo.clear()
                t1 = time.perf_counter()
                look = cache.lookup(req(q), "small")
                hit_t.append(time.perf_counter() - t1)
                assert look.status in ("hit-semantic", "miss")
            exact_t = []
            for i in range(queries):
                t1 = time.perf_counter()
                cache.lookup(req(prompts[i % len(prompts)]), "small")
                exact_t.append(time.perf_counter() - t1)
            hit_p50s.append(pct(hit_t, 50))
            print(
                f"  {n:>7,} entries (index build {build:.1f}s), repeat {rep + 1}: semantic lookup incl. "
                f"embedding {ms(miss_t)}; paraphrase lookups {ms(hit_t)}; embedding alone {ms(embed_t)}; "
                f"index search alone {ms(search_t)}; exact hit {ms(exact_t)}",
                flush=True,
            )
        if repeats > 1:
            print(
                f"  {n:>7,} entries: paraphrase lookup p50 median {statistics.median(hit_p50s) * 1e3:.2f} ms "
                f"(spread {min(hit_p50s) * 1e3:.2f} to {max(hit_p50s) * 1e3:.2f}, {repeats} repeats)"
            )


def redis_exact(queries: int) -> None:
    if shutil.which("redis-server") is None:
        print("  redis: redis-server not installed, skipped")
        return
    from tests.helpers.entry_repo import RedisProc
    from tritonforge.model_repo_templates.tf_policy.redis_backend import RedisBackend

    proc = RedisProc().start()
    try:
        backend = RedisBackend(proc.url, 100_000, 3600, prefix="bench:")
        cfg = CacheConfig(enabled=True, backend="redis", semantic=False)
        cache = ResponseCache(cfg, backend)
        r = req("What is the capital of France?")
        look = cache.lookup(r, "small")
        cache.store(look, r, "small", "", "Paris " * 50, 100)
        ts = []
        for _ in range(queries):
            t1 = time.perf_counter()
            look = cache.lookup(r, "small")
            ts.append(time.perf_counter() - t1)
            assert look.status == "hit-exact"
        print(f"  redis exact hit (loopback): {ms(ts)}")
        key = exact_key(namespace("small", "", r.params), r.text)
        assert backend.get(key) is not None
    finally:
        proc.stop()


def near_duplicates(emb, thresholds: list[float]) -> None:
    rows = [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = sorted({normalize_prompt(t) for r in rows for t in (r["a"], r["b"])})
    vecs = dict(zip(texts, emb.embed_batch(texts), strict=True))
    sims = [float(vecs[normalize_prompt(r["a"])] @ vecs[normalize_prompt(r["b"])]) for r in rows]
    t0 = time.perf_counter()
    why = [verify(r["b"], r["a"]) for r in rows]
    per_pair_us = (time.perf_counter() - t0) / len(rows) * 1e6
    same = [i for i, r in enumerate(rows) if r["same"]]
    diff = [i for i, r in enumerate(rows) if not r["same"]]
    print(
        f"  {len(rows)} pairs: {len(same)} paraphrases (must hit), {len(diff)} answer-changing edits (must not); "
        f"verification {per_pair_us:.0f} us per pair"
    )
    for th in thresholds:
        for verified in (False, True):

            def served(i: int, th: float = th, verified: bool = verified) -> bool:
                return sims[i] >= th and (not verified or why[i] is None)

            hits = sum(served(i) for i in same)
            wrong = sum(served(i) for i in diff)
            kinds: dict[str, list[int]] = {}
            for i in diff:
                kinds.setdefault(rows[i]["kind"], []).append(i)
            by_kind = ", ".join(
                f"{k} {sum(served(i) for i in ix)}/{len(ix)}" for k, ix in sorted(kinds.items())
            )
            print(
                f"  threshold {th}, {'cosine + verification' if verified else 'cosine alone'}: paraphrases hit "
                f"{hits}/{len(same)} ({hits / len(same):.1%}); wrong answers {wrong}/{len(diff)} "
                f"({wrong / len(diff):.1%}) [{by_kind}]"
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--redis", action="store_true")
    ap.add_argument("--pairs-only", action="store_true", help="only the labelled near-duplicate set")
    ap.add_argument("--scale-only", action="store_true", help="only the lookup latency at scale")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the lookup-latency queries")
    a = ap.parse_args()
    t0 = time.perf_counter()
    emb = load_embedder("builtin:all-minilm-l6-v2", threads=1)
    print(
        f"embedder loaded in {time.perf_counter() - t0:.1f}s (dim {emb.dim}, runtime {emb.runtime}, 1 thread; "
        "TRITONFORGE_EMBED_RUNTIME picks another)"
    )
    if not a.scale_only:
        print("labelled near-duplicates:")
        near_duplicates(emb, [0.85, 0.9, 0.92, 0.95, 0.97])
        if a.pairs_only:
            return
    print("semantic lookup at scale (memory backend, hnswlib):")
    scale(emb, [int(s) for s in a.sizes.split(",") if s], a.queries, a.repeats)
    if a.scale_only:
        return
    print("exact hits:")
    if a.redis:
        redis_exact(a.queries)
    print(f"hit rates, {a.requests} requests (30% repeats, 15% paraphrases):")
    for th in (0.85, 0.92, 0.95, 0.97):
        for verified in (False, True):
            emb._memo.clear()
            hit_rates(emb, a.requests, th, verified)
    print(f"total {time.perf_counter() - t0:.0f}s; load average {open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()
