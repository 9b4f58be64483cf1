"""CPU reference runtime benchmarks (figures, not assertions), on the trained embedded `demo` model.

    python benchmarks/bench_runtime.py [--threads N] [--quick] [--hf-cb] [--json OUT]

Prints: output tokens/s at concurrency 1 vs 8; TTFT p50 at concurrency 1 for a 64-token prompt;
TTFT for a request sharing a 512-token prefix with and without KV block reuse; draft-target
speculative decoding (acceptance rate, speedup vs the target alone, draft/target cost ratio).
With --hf-cb, also transformers' continuous batching (`generate_batch`, explicitly sized paged KV
cache) on the same concurrency-8 workload, for comparison with the engine's own batching loop.
Prompts are held-out standard-library source text (the model was trained on the other files).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

import torch

from tritonforge.builder.demo_model import corpus_files, materialize
from tritonforge.model_repo_templates.tf_runtime.engine import (
    Chunk,
    CpuEngine,
    GenerationRequest,
    default_num_threads,
)

LIMITS = dict(max_batch_size=8, max_num_tokens=1024, max_input_len=1024, max_seq_len=2048)


class Req:
    """Submits one request and records client-side timings."""

    def __init__(self, engine: CpuEngine, req: GenerationRequest) -> None:
        self.tokens: list[int] = []
        self.t_first: float | None = None
        self.done = threading.Event()
        self.final: Chunk | None = None
        self.t0 = time.perf_counter()
        engine.submit(req, self._cb)

    def _cb(self, c: Chunk) -> None:
        if c.token_ids and self.t_first is None:
            self.t_first = time.perf_counter()
        self.tokens.extend(c.token_ids)
        if c.finished:
            self.final = c
            self.t_end = time.perf_counter()
            self.done.set()

    def wait(self) -> Req:
        self.done.wait()
        return self

    @property
    def ttft(self) -> float:
        return (self.t_first or self.t_end) - self.t0


def heldout_tokens(tokenizer) -> list[int]:
    files = corpus_files(6_000_000)
    texts = [p.read_text(encoding="utf-8", errors="replace") for i, p in enumerate(files) if i % 16 == 7]
    return tokenizer("\n".join(texts), add_special_tokens=False, verbose=False)["input_ids"]


def prompts(stream: list[int], n: int, length: int, offset: int = 0) -> list[list[int]]:
    return [[1] + stream[offset + i * 997 : offset + i * 997 + length - 1] for i in range(n)]


def throughput(engine: CpuEngine, ps: list[list[int]], new: int, concurrency: int) -> tuple[float, float]:
    """(output tokens/s, mean ms per decode step seen by one request)."""
    t0 = time.perf_counter()
    total = 0
    per_tok = []
    for i in range(0, len(ps), concurrency):
        rs = [Req(engine, GenerationRequest(p, new, end_id=-1)) for p in ps[i : i + concurrency]]
        for r in rs:
            r.wait()
            total += len(r.tokens)
            per_tok.append((r.t_end - r.t_first) / max(1, len(r.tokens) - 1))
    return total / (time.perf_counter() - t0), 1000 * statistics.mean(per_tok)


def ttfts(engine: CpuEngine, ps: list[list[int]]) -> list[float]:
    return [Req(engine, GenerationRequest(p, 4, end_id=-1)).wait().ttft for p in ps]


def speculative(target: CpuEngine, draft: CpuEngine, ps: list[list[int]], new: int, k: int) -> dict:
    """The BLS loop in-process: draft proposes k greedily, target verifies; vs the target alone."""
    t0 = time.perf_counter()
    alone = [Req(target, GenerationRequest(p, new, end_id=-1)).wait().tokens for p in ps]
    t_alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    drafted = accepted = rounds = 0
    outs = []
    for p in ps:
        out: list[int] = []
        while len(out) < new:
            kk = min(k, new - len(out) - 1)
            d = Req(draft, GenerationRequest(p + out, kk, end_id=-1)).wait().tokens if kk > 0 else []
            got = (
                Req(target, GenerationRequest(p + out, len(d) + 1, end_id=-1, draft_input_ids=d or None))
                .wait()
                .tokens
            )
            lcp = 0
            while lcp < min(len(d), len(got)) and d[lcp] == got[lcp]:
                lcp += 1
            drafted += len(d)
            accepted += lcp
            rounds += 1
            out += got
        outs.append(out[:new])
    t_spec = time.perf_counter() - t0
    return {
        "num_draft_tokens": k,
        "acceptance_rate": round(accepted / max(1, drafted), 3),
        "tokens_per_round": round(len(ps) * new / rounds, 2),
        "target_alone_tok_s": round(len(ps) * new / t_alone, 1),
        "speculative_tok_s": round(len(ps) * new / t_spec, 1),
        "speedup": round(t_alone / t_spec, 2),
        "greedy_identical": outs == alone,
    }


def hf_continuous_batching(model_dir, ps: list[list[int]], new: int) -> dict:
    """transformers `generate_batch` with an explicitly sized paged cache, same workload."""
    from transformers import AutoModelForCausalLM, ContinuousBatchingConfig, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="sdpa"
    )
    model.eval()
    gen = GenerationConfig(max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0)
    need = sum(len(p) + new for p in ps)
    cb = ContinuousBatchingConfig(
        page_size=32, num_blocks=need // 32 + 2 * len(ps) + 8, max_batch_tokens=1024
    )
    out = {}
    for attempt in range(2):  # first run includes warm-up
        t0 = time.perf_counter()
        res = model.generate_batch(
            ps, generation_config=gen, continuous_batching_config=cb, progress_bar=False
        )
        dt = time.perf_counter() - t0
        n = sum(len(r.generated_tokens) for r in res.values())
        out = {"tok_s": round(n / dt, 1), "tokens": n, "seconds": round(dt, 2), "run": attempt + 1}
    order = sorted(
        res.values(),
        key=lambda r: (
            int(str(r.request_id).split("_")[-1]) if str(r.request_id).split("_")[-1].isdigit() else 0
        ),
    )
    out["outputs"] = [list(r.generated_tokens) for r in order]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the engine's default)")
    ap.add_argument("--quick", action="store_true", help="fewer requests")
    ap.add_argument("--hf-cb", action="store_true", help="also measure transformers continuous batching")
    ap.add_argument("--json", default=None, help="write the figures here too")
    args = ap.parse_args(argv)
    from transformers import AutoTokenizer

    demo, draft_dir = materialize("demo"), materialize("demo-draft")
    info = json.loads((demo / "tritonforge_demo.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(demo))
    stream = heldout_tokens(tok)
    if len(stream) < 60_000:
        raise SystemExit(f"held-out text too short ({len(stream)} tokens)")
    n = 8 if args.quick else 16
    new = 64 if args.quick else 128
    res: dict = {
        "model": f"demo ({info['parameters']:,} params, held-out ppl {info.get('heldout_perplexity')})",
        "threads": args.threads or default_num_threads(),
    }

    def log(key: str, value) -> None:
        res[key] = value
        print(f"{key}: {value}", flush=True)

    log("model", res["model"])
    log("threads", res["threads"])
    eng = CpuEngine(demo, **LIMITS, num_threads=args.threads)
    ps64 = prompts(stream, n, 64)
    throughput(eng, ps64[:2], 8, 1)  # warm-up
    tps1, step1 = throughput(eng, ps64[: max(2, n // 4)], new, 1)
    tps8, step8 = throughput(eng, ps64, new, 8)
    log("tok_s_concurrency_1", round(tps1, 1))
    log("tok_s_concurrency_8", round(tps8, 1))
    log("speedup_8_vs_1", round(tps8 / tps1, 2))
    log("ms_per_step_c1", round(step1, 2))
    log("ms_per_step_c8", round(step8, 2))
    alone = [Req(eng, GenerationRequest(p, 64, end_id=-1)).wait().tokens for p in ps64[:8]]
    batch = [r.wait().tokens for r in [Req(eng, GenerationRequest(p, 64, end_id=-1)) for p in ps64[:8]]]
    log("greedy_identical_alone_vs_batch8", alone == batch)
    t = ttfts(eng, prompts(stream, 20, 64, offset=20_000))
    log("ttft_p50_ms_64tok_c1", round(1000 * statistics.median(t), 1))
    log("ttft_p90_ms_64tok_c1", round(1000 * sorted(t)[int(0.9 * len(t)) - 1], 1))

    prefix = [1] + stream[40_000 : 40_000 + 511]
    suffixes = [stream[45_000 + 40 * i : 45_000 + 40 * i + 16] for i in range(12)]
    reuse = CpuEngine(demo, **LIMITS, enable_block_reuse=True, tokens_per_block=32, num_threads=args.threads)
    Req(reuse, GenerationRequest(prefix + suffixes[-1], 4, end_id=-1)).wait()  # fills the prefix cache
    with_reuse = [Req(reuse, GenerationRequest(prefix + s, 4, end_id=-1)).wait() for s in suffixes[:10]]
    without = ttfts(eng, [prefix + s for s in suffixes[:10]])
    a = statistics.median(r.ttft for r in with_reuse)
    b = statistics.median(without)
    log("ttft_ms_512_prefix_no_reuse", round(1000 * b, 1))
    log("ttft_ms_512_prefix_reuse", round(1000 * a, 1))
    log("reuse_ttft_speedup", round(b / a, 2))
    log("reused_blocks_per_request", with_reuse[0].final.kv_cache_reused_blocks)

    # draft/target cost: per-token decode time of each alone, and per 528-token prefill
    d_eng = CpuEngine(
        draft_dir, **LIMITS, enable_block_reuse=True, tokens_per_block=16, num_threads=args.threads
    )
    throughput(d_eng, ps64[:2], 8, 1)
    _, d_step = throughput(d_eng, ps64[:4], new, 1)
    log("draft_ms_per_token", round(d_step, 2))
    log("target_ms_per_token", round(step1, 2))
    log("draft_target_cost_ratio", round(d_step / step1, 3))
    t_reuse = CpuEngine(
        demo, **LIMITS, enable_block_reuse=True, tokens_per_block=16, num_threads=args.threads
    )
    sp_prompts = prompts(stream, 4 if args.quick else 6, 64, offset=50_000)
    for k in (2, 4):
        log(f"speculative_k{k}", speculative(t_reuse, d_eng, sp_prompts, new, k))

    if args.hf_cb:
        hf = hf_continuous_batching(demo, ps64[:8], new)
        ours = [Req(eng, GenerationRequest(p, new, end_id=-1)) for p in ps64[:8]]
        ours_out = [r.wait().tokens for r in ours]
        log("hf_generate_batch_tok_s_8", hf["tok_s"])
        log("hf_generate_batch_matches_engine_greedy", hf["outputs"] == ours_out)
        tps8b, _ = throughput(eng, ps64[:8], new, 8)
        log("engine_tok_s_8_same_workload", round(tps8b, 1))
    for e in (eng, reuse, d_eng, t_reuse):
        e.shutdown()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
