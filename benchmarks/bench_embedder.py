"""Embedding runtimes for the semantic cache: latency of one query and quality on the near-duplicate set.

    python benchmarks/bench_embedder.py [--runtimes st,torch,onnx,onnx-int8,static] [--repeats 3]
        [--threads 1] [--thresholds 0.85,0.9,0.92,0.95] [--static-thresholds 0.85,...]
        [--gate-thresholds 0.6,...] [--minilm-threshold 0.95]

Each runtime embeds with all-MiniLM-L6-v2 (the packaged weights; the ONNX files and the static token
table are made here once, under $TRITONFORGE_CACHE). For every repeat, the runtimes take turns
(interleaved, so load drifts hit all alike) embedding each distinct prompt of
benchmarks/data/near_duplicates.jsonl one at a time, memo cleared: the cost of one semantic lookup's
embedding. Printed per runtime: p50/p99 per repeat, the median p50 with its spread (min-max over
repeats) and its ratio to the first runtime listed, per repeat.

Quality, with each runtime's own vectors, at thresholds on its own scale (`static` is a bag of token
vectors: its similarities run higher, so it has its own list):
- pairs: the labelled pairs (b asked, a cached): paraphrases served (must hit) and answer-changing
  edits served (must not), cosine + verification as the cache does; "cosine alone" counts the edits
  above the threshold before verification (what the verifier has to catch), and the highest cosine
  of an edit (above it, cosine alone serves none).
- retrieval: every distinct prompt is asked against a cache holding all the others, the cache's way
  (top 3 above the threshold, first that passes verification): served from the same answer class
  (a prompt and its paraphrases) or from another (a wrong answer).
- workload: the paraphrase pairs of benchmarks/bench_cache.py's synthetic workload (templates x
  subjects: rewordings such as "Write a short poem about X." / "Compose a short poem about X."),
  served (cosine + verification), out of those verification alone lets through.
- gate (with `static` and a MiniLM runtime): static vectors as a cheap first stage, MiniLM (at
  --minilm-threshold) asked only when the static top candidate is above the gate: its recall on what
  MiniLM alone serves (pairs and retrieval; below 1.0 the gate loses hits), the true misses that pass
  it (MiniLM run for nothing), and, for novel prompts (asked against a cache holding only the other
  prompt groups), the share that pass the gate; then the embedding cost of such a miss, per prompt,
  gated (static, plus MiniLM when it passes) vs MiniLM alone, from the same two timings per prompt
  (memos cleared; the static index search, ~0.1 ms at 100k entries in bench_cache, is not included).
Prints figures; asserts nothing.
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
TOP_K = 3  # candidates the cache checks per lookup (tf_policy/cache.py)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


class Verdicts:
    """verify(query, cached), memoized: the same pair comes up at every threshold."""

    def __init__(self) -> None:
        self.memo: dict[tuple[str, str], bool] = {}

    def ok(self, query: str, cached: str) -> bool:
        key = (query, cached)
        if key not in self.memo:
            self.memo[key] = verify(query, cached) is None
        return self.memo[key]


def retrieval(
    sim: np.ndarray, texts: list[str], allowed: np.ndarray, th: float, verdicts: Verdicts
) -> list[int]:
    """For each prompt, the index of the entry the cache serves (-1: a miss): the top TOP_K among
    `allowed[q]` above `th`, first that passes verification."""
    out = []
    for q in range(len(texts)):
        s = np.where(allowed[q], sim[q], -np.inf)
        served = -1
        for c in np.argsort(-s, kind="stable")[:TOP_K]:
            if s[c] < th:
                break
            if verdicts.ok(texts[q], texts[c]):
                served = int(c)
                break
        out.append(served)
    return out


def workload_pairs() -> list[tuple[str, str]]:
    """(cached, asked) paraphrase pairs of bench_cache's synthetic workload; [] when it cannot load."""
    try:
        from bench_cache import SUBJECTS, TEMPLATES  # type: ignore[import-not-found]
    except Exception as exc:  # noqa: BLE001 - the other figures still stand
        print(f"workload paraphrases unavailable ({type(exc).__name__}: {exc})")
        return []
    return [(t.format(s=x), p.format(s=x)) for t, ps in TEMPLATES for x in SUBJECTS for p in ps]


def latency(embs: dict, texts: list[str], repeats: int) -> None:
    for e in embs.values():  # warm up
        for t in texts[:20]:
            e.embed(t + " warm")
    p50s: dict[str, list[float]] = {k: [] for k in embs}
    print(f"one query at a time, {len(texts)} distinct prompts, {repeats} interleaved repeats:")
    for rep in range(repeats):
        for rt, e in embs.items():
            e._memo.clear()
            ts = []
            for t in texts:
                t1 = time.perf_counter()
                e.embed(t)
                ts.append(time.perf_counter() - t1)
            p50s[rt].append(pct(ts, 50))
            print(
                f"  repeat {rep + 1} {rt:10s} p50 {pct(ts, 50) * 1e3:7.3f} ms  p99 {pct(ts, 99) * 1e3:7.3f} ms"
            )
    base_rt = next(iter(p50s))
    print(f"summary (median p50 over repeats, spread min-max; ratio to {base_rt} per repeat):")
    for rt, xs in p50s.items():
        ratio = ""
        if rt != base_rt:
            rs = [x / s for x, s in zip(xs, p50s[base_rt], strict=True)]
            ratio = f"  ratio to {base_rt} {statistics.median(rs):.3f} (spread {min(rs):.3f}-{max(rs):.3f})"
        print(
            f"  {rt:10s} p50 {statistics.median(xs) * 1e3:7.3f} ms "
            f"(spread {min(xs) * 1e3:.3f}-{max(xs) * 1e3:.3f}){ratio}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runtimes", default="st,torch,onnx,onnx-int8,static")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--thresholds", default="0.85,0.9,0.92,0.95")
    ap.add_argument("--static-thresholds", default="0.85,0.9,0.92,0.95,0.97,0.98")
    ap.add_argument("--gate-thresholds", default="0.6,0.7,0.75,0.8,0.85,0.9")
    ap.add_argument("--minilm-threshold", type=float, default=0.95, help="the spec default")
    ap.add_argument("--no-latency", action="store_true", help="quality figures only")
    a = ap.parse_args()
    rows = [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = sorted({normalize_prompt(t) for r in rows for t in (r["a"], r["b"])})
    pos = {t: i for i, t in enumerate(texts)}
    embs = {}
    for rt in a.runtimes.split(","):
        t0 = time.perf_counter()
        try:
            embs[rt] = load_embedder("builtin:all-minilm-l6-v2", threads=a.threads, runtime=rt)
        except Exception as exc:  # noqa: BLE001 - report and go on with the others
            print(f"{rt}: cannot load ({type(exc).__name__}: {exc})")
            continue
        e = embs[rt]
        print(f"{rt}: loaded in {time.perf_counter() - t0:.1f}s (runtime {e.runtime}, {e.dim} dims)")
        if e.runtime != rt:
            print(f"  {rt} fell back to {e.runtime}: skipped")
            del embs[rt]
    if not a.no_latency:
        latency(embs, texts, a.repeats)

    # answer classes: a prompt and its paraphrases (transitively); every other edit is its own class
    classes, groups = UnionFind(), UnionFind()
    for r in rows:
        na, nb = normalize_prompt(r["a"]), normalize_prompt(r["b"])
        classes.find(na), classes.find(nb)
        groups.union(na, nb)
        if r["same"]:
            classes.union(na, nb)
    cls = np.array([classes.find(t) for t in texts])
    grp = np.array([groups.find(t) for t in texts])
    clash = sum(
        cls[pos[normalize_prompt(r["a"])]] == cls[pos[normalize_prompt(r["b"])]]
        for r in rows
        if not r["same"]
    )
    ia = np.array([pos[normalize_prompt(r["a"])] for r in rows])
    ib = np.array([pos[normalize_prompt(r["b"])] for r in rows])
    ok = np.array([verify(r["b"], r["a"]) is None for r in rows])
    same = np.array([bool(r["same"]) for r in rows])
    diff = ~same
    n_class = len(set(cls.tolist()))
    print(
        f"near-duplicate set: {int(same.sum())} paraphrases (must hit), {int(diff.sum())} answer-changing "
        f"edits (must not; verification alone passes {int(ok[diff].sum())}, and {int(ok[same].sum())} "
        f"paraphrases); {len(texts)} distinct prompts in {n_class} answer classes, {len(set(grp.tolist()))} "
        f"groups{f', {clash} edits in their anchor class (labels disagree)' if clash else ''}"
    )
    others = ~np.eye(len(texts), dtype=bool)
    can_hit = np.array([np.sum(cls == cls[q]) > 1 for q in range(len(texts))])
    verdicts = Verdicts()
    sims_pairs: dict[str, np.ndarray] = {}
    sim_all: dict[str, np.ndarray] = {}
    served_at: dict[tuple[str, float], list[int]] = {}
    for rt, e in embs.items():
        vecs = e.embed_batch(texts)
        sim = vecs @ vecs.T
        sim_all[rt] = sim
        sp = sim[ia, ib]
        sims_pairs[rt] = sp
        ths = a.static_thresholds if rt == "static" else a.thresholds
        print(f"  {rt} ({e.dim} dims): highest cosine of an edit {sp[diff].max():.4f}")
        for th in [float(x) for x in ths.split(",")]:
            hits = int((same & (sp >= th) & ok).sum())
            wrong = int((diff & (sp >= th) & ok).sum())
            raw = int((diff & (sp >= th)).sum())
            served = retrieval(sim, texts, others, th, verdicts)
            served_at[(rt, th)] = served
            right = sum(s >= 0 and cls[s] == cls[q] for q, s in enumerate(served))
            bad = sum(s >= 0 and cls[s] != cls[q] for q, s in enumerate(served))
            print(
                f"    @{th}: pairs: paraphrases {hits}/{int(same.sum())}, wrong {wrong} (cosine alone "
                f"{raw}/{int(diff.sum())}); retrieval: served {right}/{int(can_hit.sum())}, wrong {bad}"
            )
    work = workload_pairs()
    work_ok = np.array([verify(q, c) is None for c, q in work], dtype=bool)
    work_sims: dict[str, np.ndarray] = {}
    if work:
        print(
            f"workload paraphrases (bench_cache templates x subjects): {len(work)} pairs, verification "
            f"alone passes {int(work_ok.sum())}"
        )
    for rt, e in embs.items() if work else ():
        wc = e.embed_batch([normalize_prompt(c) for c, _ in work])
        wq = e.embed_batch([normalize_prompt(q) for _, q in work])
        work_sims[rt] = (wc * wq).sum(1)
        ths = a.static_thresholds if rt == "static" else a.thresholds
        print(
            f"  {rt:10s} "
            + ", ".join(
                f"@{th}: {int(((work_sims[rt] >= float(th)) & work_ok).sum())}" for th in ths.split(",")
            )
        )
    mini = next((rt for rt in ("onnx-int8", "onnx", "st", "torch") if rt in embs), None)
    if "static" in embs and mini is not None:
        th = a.minilm_threshold
        ss, ms = sims_pairs["static"], sims_pairs[mini]
        served_pair = same & (ms >= th) & ok
        unserved_pair = ~(ms >= th) | ~ok
        served = served_at.get((mini, th)) or retrieval(sim_all[mini], texts, others, th, verdicts)
        mini_served = np.array([s >= 0 for s in served])
        top_static = np.where(others, sim_all["static"], -np.inf).max(1)
        novel = grp[:, None] != grp[None, :]  # only the other groups are in the cache
        top_novel = np.where(novel, sim_all["static"], -np.inf).max(1)
        top_novel_mini = np.where(novel, sim_all[mini], -np.inf).max(1)
        print(
            f"two-stage gate: static first, {mini} at {th} only above the gate; MiniLM alone serves "
            f"{int(served_pair.sum())} pairs, {int(mini_served.sum())} prompts in retrieval; novel prompts "
            f"above {th} with {mini} alone: {int((top_novel_mini >= th).sum())}/{len(texts)}"
        )
        for g in [float(x) for x in a.gate_thresholds.split(",")]:
            recall_p = int((served_pair & (ss >= g)).sum())
            recall_r = int((mini_served & (top_static >= g)).sum())
            waste_p = int((unserved_pair & (ss >= g)).sum())
            waste_r = int((~mini_served & (top_static >= g)).sum())
            novel_pass = int((top_novel >= g).sum())
            work_recall = ""
            if work_sims:
                work_served = (work_sims[mini] >= th) & work_ok
                got = int((work_served & (work_sims["static"] >= g)).sum())
                work_recall = f", workload {got}/{int(work_served.sum())}"
            print(
                f"  gate @{g}: recall pairs {recall_p}/{int(served_pair.sum())}, retrieval "
                f"{recall_r}/{int(mini_served.sum())}{work_recall}; true misses through the gate: pairs "
                f"{waste_p}/{int(unserved_pair.sum())}, retrieval {waste_r}/{int((~mini_served).sum())}; "
                f"novel prompts through {novel_pass}/{len(texts)} ({novel_pass / len(texts):.1%})"
            )
        if not a.no_latency:
            gate_cost(embs["static"], embs[mini], texts, top_novel, a)
    print(f"load average {open('/proc/loadavg').read().split()[0]}")


def gate_cost(static, mini, texts: list[str], top_novel: np.ndarray, a: argparse.Namespace) -> None:
    """Embedding cost of a novel prompt's lookup, gated vs MiniLM alone (see the module docstring)."""
    gates = [float(x) for x in a.gate_thresholds.split(",")]
    res: dict[float, list[tuple[float, float, float, float]]] = {g: [] for g in gates}
    for _ in range(a.repeats):
        ts, tm = [], []
        for t in texts:
            static._memo.clear()
            mini._memo.clear()
            t1 = time.perf_counter()
            static.embed(t)
            t2 = time.perf_counter()
            mini.embed(t)
            ts.append(t2 - t1)
            tm.append(time.perf_counter() - t2)
        alone = np.array(tm)
        for g in gates:
            gated = np.array(ts) + np.where(top_novel >= g, alone, 0.0)
            res[g].append(
                (pct(list(gated), 50), float(gated.mean()), pct(list(alone), 50), float(alone.mean()))
            )
    print(f"novel-prompt lookup embedding cost, gated vs MiniLM alone ({a.repeats} repeats, median, spread):")
    for g, rs in res.items():
        p50, mean, alone50, alone_mean = (np.array([r[i] for r in rs]) * 1e3 for i in range(4))
        print(
            f"  gate @{g}: gated p50 {np.median(p50):.3f} ms ({p50.min():.3f}-{p50.max():.3f}), mean "
            f"{np.median(mean):.3f} ms ({mean.min():.3f}-{mean.max():.3f}); MiniLM alone p50 "
            f"{np.median(alone50):.3f} ms ({alone50.min():.3f}-{alone50.max():.3f}), mean "
            f"{np.median(alone_mean):.3f} ms ({alone_mean.min():.3f}-{alone_mean.max():.3f})"
        )


if __name__ == "__main__":
    main()
