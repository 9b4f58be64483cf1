"""Draft-target speculation follows the backend's documented recipe.

Source of every name checked here: TensorRT-LLM examples/draft_target_model/README.md, "Triton Inference
Server workflow" (https://github.com/NVIDIA/TensorRT-LLM/blob/release/1.2/examples/draft_target_model/README.md):
a `tensorrt_llm_draft` model that is a renamed copy of `tensorrt_llm` with its own engine and
`gpu_device_ids`; `tensorrt_llm_bls` filled with `tensorrt_llm_model_name` / `tensorrt_llm_draft_model_name`;
both engines with `enable_kv_cache_reuse: True`, `max_beam_width: 1`, `max_tokens_in_paged_kv_cache`;
requests carrying `num_draft_tokens` and optionally `use_draft_logits`; the target built with
`--speculative_decoding_mode=draft_tokens_external --max_draft_len`, and `--gather_generation_logits`
"necessary if using generation logits". The BLS's tensors are those of
triton_backend/all_models/inflight_batcher_llm/tensorrt_llm_bls/config.pbtxt (same tree).

Two engines on one GPU: `kv_cache_free_gpu_mem_fraction` applies to the memory free when each model
loads (tensorrtllm_backend docs/model_config.md), so two fractions let the load order decide the split.
The pools are pinned with `max_tokens_in_paged_kv_cache` from the plan instead; a test replays both load
orders.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = "llama3.1-70b-fp8-tp2-draft-h100.yaml"


def _params(cfg) -> dict[str, str]:
    return {k: v.string_value for k, v in cfg.parameters.items()}


def _load(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    return text_format.Parse(path.read_text(), mc.ModelConfig())


@pytest.fixture(scope="module")
def spec():
    from tritonforge.builder.spec import load_spec

    return load_spec(ROOT / "examples" / EXAMPLE)


@pytest.fixture(scope="module")
def plan(spec):
    from tritonforge.builder.planner import plan_deployment

    return plan_deployment(spec).tier("main")


@pytest.fixture(scope="module")
def repo(tmp_path_factory, spec) -> Path:
    from tritonforge.ensembles.render import emit_files, write_repository

    d = tmp_path_factory.mktemp("draft-conformance")
    files, _ = emit_files(spec, ROOT / "examples")
    write_repository(files, d / "repo")
    return d / "repo"


def test_draft_model_is_a_renamed_tensorrt_llm(repo) -> None:
    target, draft = (
        _load(repo / "tensorrt_llm" / "config.pbtxt"),
        _load(repo / "tensorrt_llm_draft" / "config.pbtxt"),
    )
    assert draft.name == "tensorrt_llm_draft" and draft.backend == target.backend == "tensorrtllm"
    assert list(draft.input) == list(target.input) and list(draft.output) == list(target.output)
    tp, dp = _params(target), _params(draft)
    assert tp["gpt_model_path"] != dp["gpt_model_path"]  # its own engine
    for p in (tp, dp):
        assert p["enable_kv_cache_reuse"] == "true" and p["max_beam_width"] == "1"
        assert p["gpu_device_ids"]  # placed explicitly, per model
        assert p["gpt_model_type"] == "inflight_fused_batching"
    inputs = {t.name for t in target.input}
    assert {
        "draft_input_ids",
        "draft_logits",
        "draft_acceptance_threshold",
        "return_generation_logits",
    } <= inputs


def test_bls_has_the_documented_parameters_and_inputs(repo, spec) -> None:
    bls = _load(repo / "tensorrt_llm_bls" / "config.pbtxt")
    p = _params(bls)
    assert p["tensorrt_llm_model_name"] == "tensorrt_llm"
    assert p["tensorrt_llm_draft_model_name"] == "tensorrt_llm_draft"
    k = spec.tiers[0].draft.num_draft_tokens
    assert int(p["num_draft_tokens"]) == k <= int(p["max_draft_len"])
    inputs = {t.name: t for t in bls.input}
    assert inputs["num_draft_tokens"].optional and inputs["use_draft_logits"].optional
    # engines here are built without --gather_generation_logits, so the BLS says draft logits are unavailable
    assert p["use_draft_logits_enabled"] == "false"


def test_target_engine_is_built_for_external_drafts_of_k(plan, spec) -> None:
    from tritonforge.builder.planner import trtllm_build_argv

    k = spec.tiers[0].draft.num_draft_tokens
    argv = trtllm_build_argv(plan.engine)
    assert argv[argv.index("--speculative_decoding_mode") + 1] == "draft_tokens_external"
    assert int(argv[argv.index("--max_draft_len") + 1]) >= k
    assert "--speculative_decoding_mode" not in trtllm_build_argv(plan.draft.engine)


def test_num_draft_tokens_over_the_built_max_draft_len_is_refused(spec, plan) -> None:
    from dataclasses import replace

    from tritonforge.builder.engine_facts import engine_facts
    from tritonforge.ensembles.wiring import TierPaths, plan_repository
    from tritonforge.errors import UserError

    # An engine built with --max_draft_len 2.
    built = replace(engine_facts(spec.tiers[0], plan), max_draft_len=2)
    paths = {
        "main": TierPaths(
            "/engines/main/engine", "/engines/main/tokenizer", "/engines/main/draft_engine", engine=built
        )
    }
    with pytest.raises(UserError, match=r"num_draft_tokens 4 exceeds the target engine's max_draft_len 2"):
        plan_repository(spec, paths, "test")


def test_kv_pools_are_pinned_in_tokens_from_the_plan(repo, plan) -> None:
    tp = _params(_load(repo / "tensorrt_llm" / "config.pbtxt"))
    dp = _params(_load(repo / "tensorrt_llm_draft" / "config.pbtxt"))
    assert tp["gpu_device_ids"] == dp["gpu_device_ids"]  # they share GPUs in this example
    assert int(tp["max_tokens_in_paged_kv_cache"]) == plan.memory.kv_pool_tokens > 0
    assert int(dp["max_tokens_in_paged_kv_cache"]) == plan.draft.memory.kv_pool_tokens > 0
    both = round(plan.memory.kv_fraction + plan.draft.memory.kv_fraction, 4)
    assert (
        float(tp["kv_cache_free_gpu_mem_fraction"])
        == float(dp["kv_cache_free_gpu_mem_fraction"])
        == min(0.95, both)
    )


def _load_in_order(first, second, fractions, max_tokens):
    """Replay loading two engines on one GPU: each takes min(fraction x memory free when it loads,
    max_tokens x KV bytes per token) (tensorrtllm_backend docs/model_config.md). Returns tokens per engine."""
    m = first["mem"]
    free = m.gpu_memory
    got = {}
    for e in (first, second):
        mem = e["mem"]
        free -= mem.weights + mem.activations
        pool = math.floor(fractions[e["name"]] * free)
        if max_tokens[e["name"]] is not None:
            pool = min(pool, max_tokens[e["name"]] * mem.kv_bytes_per_token)
        got[e["name"]] = pool // (mem.kv_bytes_per_token * mem.tokens_per_block) * mem.tokens_per_block
        free -= pool
    return got


def test_either_load_order_gets_the_planned_pools(repo, plan) -> None:
    tp = _params(_load(repo / "tensorrt_llm" / "config.pbtxt"))
    dp = _params(_load(repo / "tensorrt_llm_draft" / "config.pbtxt"))
    target, draft = {"name": "t", "mem": plan.memory}, {"name": "d", "mem": plan.draft.memory}
    planned = {"t": plan.memory.kv_pool_tokens, "d": plan.draft.memory.kv_pool_tokens}
    ours_f = {
        "t": float(tp["kv_cache_free_gpu_mem_fraction"]),
        "d": float(dp["kv_cache_free_gpu_mem_fraction"]),
    }
    ours_max = {"t": int(tp["max_tokens_in_paged_kv_cache"]), "d": int(dp["max_tokens_in_paged_kv_cache"])}
    assert _load_in_order(target, draft, ours_f, ours_max) == planned
    assert _load_in_order(draft, target, ours_f, ours_max) == planned
    # What two split fractions alone would do: whichever loads second gets a fraction of the rest.
    split = {"t": plan.memory.kv_fraction, "d": plan.draft.memory.kv_fraction}
    no_cap = {"t": None, "d": None}
    assert _load_in_order(target, draft, split, no_cap)["d"] < planned["d"]
    assert _load_in_order(draft, target, split, no_cap)["t"] < planned["t"]


# ---------------------------------------------------------------------------------- real Triton


@pytest.fixture(scope="module")
def bls_server(tmp_path_factory, tf_cache):
    from tritonforge.builder.spec import load_spec
    from tritonforge.ensembles.render import emit_files, write_repository
    from tritonforge.ensembles.server import TritonServer, free_ports

    d = tmp_path_factory.mktemp("draft-bls")
    data = yaml.safe_load((ROOT / "examples" / "cpu-demo.yaml").read_text())
    data["tiers"][0]["model"] = "builtin:tiny"
    data["tiers"][0]["draft"] = {"model": "builtin:tiny-draft", "num_draft_tokens": 3}
    (d / "spec.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    files, _ = emit_files(load_spec(d / "spec.yaml"), d)
    write_repository(files, d / "repo")
    with TritonServer(d / "repo", free_ports(), log_path=d / "triton.log") as srv:
        srv.wait_ready(300)
        yield srv


def _bls(srv, body: dict) -> tuple[int, str]:
    r = requests.post(f"{srv.http_url}/v2/models/tensorrt_llm_bls/generate_stream", json=body, timeout=120)
    return r.status_code, r.text


@pytest.mark.server
@pytest.mark.slow
def test_bls_requests_as_the_readme_sends_them(bls_server) -> None:
    base = {"text_input": "def main(argv):\n    ", "max_tokens": 16, "stream": False}
    code, text = _bls(bls_server, {**base, "num_draft_tokens": 3})
    assert code == 200 and "text_output" in text, text
    code, text = _bls(bls_server, {**base, "num_draft_tokens": 3, "repetition_penalty": 1.5})
    assert code == 200 and "text_output" in text, text
    code, text = _bls(bls_server, {**base, "num_draft_tokens": 4})
    assert "max_draft_len" in text and "got 4" in text, text
    code, text = _bls(bls_server, {**base, "use_draft_logits": True})
    assert "use_draft_logits" in text and "--gather_generation_logits" in text, text
    # LoRA goes to the target engine, which answers for itself (here: the CPU engine refuses it by name)
    code, text = _bls(bls_server, {**base, "lora_task_id": 1})
    assert "lora_task_id" in text and "CPU reference engine" in text, text
    # the embedding bias reaches the engines through preprocessing
    code, text = _bls(
        bls_server,
        {**base, "max_tokens": 4, "embedding_bias_words": ["return"], "embedding_bias_weights": [1e4]},
    )
    assert code == 200, text
    out = json.loads(text.split("data:", 1)[1])["text_output"] if "data:" in text else ""
    assert out.strip() and set(out.replace(" ", "")) <= set("return"), text
    code, text = _bls(bls_server, {**base, "num_return_sequences": 2})
    assert "num_return_sequences" in text, text
