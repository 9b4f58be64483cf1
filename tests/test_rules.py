"""Every validation rule produces its error (or warning), with the fix in the message.

Each test cites the source of the rule it exercises (see builder/rules.py for the same citations).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from click.testing import CliRunner

from tritonforge.builder import rules
from tritonforge.builder.build_cli import plan_command
from tritonforge.builder.gpus import get_gpu, known_gpus
from tritonforge.builder.planner import plan_deployment
from tritonforge.builder.spec import parse_spec
from tritonforge.errors import UserError

SPECS = Path(__file__).parent / "fixtures" / "specs"


def spec_of(**tier):
    base = {
        "name": "main",
        "model": "fixture:llama-3.1-8b",
        "runtime": "trtllm-engine",
        "quantization": {"format": "fp8", "kv_cache_dtype": "fp8"},
    }
    base.update(tier)
    return parse_spec({"name": "rules", "tiers": [base]})


def problems(**tier):
    return plan_deployment(spec_of(**tier)).all_problems


def errors(**tier):
    return [p for p in problems(**tier) if p.severity == "error"]


def rule_ids(ps):
    return {p.rule for p in ps}


def test_a_valid_tier_has_no_problems():
    assert problems() == []


# Source: TensorRT-LLM docs/source/reference/precision.md (https://github.com/NVIDIA/TensorRT-LLM/blob/release/1.2/docs/source/reference/precision.md):
# NVFP4 only on Blackwell (sm100).
def test_nvfp4_needs_blackwell():
    e = errors(quantization={"format": "nvfp4", "kv_cache_dtype": "fp8"})
    assert rule_ids(e) == {"nvfp4-needs-blackwell"}
    assert "B200" in e[0].message and "H100-SXM is sm90" in e[0].message
    assert not errors(quantization={"format": "nvfp4", "kv_cache_dtype": "fp8"}, gpu={"type": "B200"})
    assert rule_ids(errors(quantization={"format": "fp8", "kv_cache_dtype": "nvfp4"})) == {
        "nvfp4-needs-blackwell"
    }


# Source: TensorRT-LLM docs/source/reference/precision.md hardware table (FP8: Ada sm89+, not Ampere).
@pytest.mark.parametrize("fmt", ["fp8", "w4a8_awq"])
def test_fp8_needs_sm89(fmt):
    e = errors(quantization={"format": fmt}, gpu={"type": "A100-80GB"})
    assert rule_ids(e) == {"fp8-needs-sm89"}
    assert "int4_awq" in e[0].message
    assert not errors(quantization={"format": fmt}, gpu={"type": "L40S"})


# Source: TensorRT-LLM builder.py: "INT8/INT4 quantization is not supported on SM>=100",
# "SmoothQuant is not supported on SM>=100" (https://github.com/NVIDIA/TensorRT-LLM/blob/release/1.2/tensorrt_llm/builder.py).
@pytest.mark.parametrize(
    "quant",
    [
        {"format": "int4_awq"},
        {"format": "w4a8_awq"},
        {"format": "int8_sq"},
        {"format": "fp8", "kv_cache_dtype": "int8"},
    ],
)
def test_int_weights_and_int8_kv_refused_on_blackwell(quant):
    e = errors(quantization=quant, gpu={"type": "B200"}, kv_cache={"block_reuse": False})
    assert "int-weights-refused-on-sm100" in rule_ids(e)
    assert "sm100" in e[0].message
    assert not errors(quantization=quant, gpu={"type": "H100-SXM"}, kv_cache={"block_reuse": False})


# Source: TensorRT-LLM tensorrt_llm/layers/attention.py (https://github.com/NVIDIA/TensorRT-LLM/blob/release/1.2/tensorrt_llm/layers/attention.py): the attention
# heads and KV heads are split across the TP ranks.
def test_tp_divides_heads():
    e = errors(parallelism={"tp": 3}, gpu={"count": 3})
    assert rule_ids(e) == {"tp-divides-heads"}
    assert "use tp 1, 2, 4, 8" in e[0].message  # Llama-3.1-8B: 32 heads, 8 KV heads
    assert "tp-divides-heads" in rule_ids(errors(parallelism={"tp": 16}, gpu={"count": 16}))


# Source: TensorRT-LLM tensorrt_llm/mapping.py (https://github.com/NVIDIA/TensorRT-LLM/blob/release/1.2/tensorrt_llm/mapping.py): world_size = tp_size * pp_size.
def test_world_size_must_fit_gpu_count():
    e = errors(parallelism={"tp": 2, "pp": 2}, gpu={"count": 2})
    assert rule_ids(e) == {"world-size"} and "gpu.count: 4" in e[0].message
    w = problems(gpu={"count": 3})
    assert [(p.severity, p.rule) for p in w] == [("warning", "world-size")]


# Source: TensorRT-LLM docs/source/advanced/kv-cache-reuse.md (https://github.com/NVIDIA/TensorRT-LLM/blob/release/1.2/docs/source/advanced/kv-cache-reuse.md):
# block reuse needs --use_paged_context_fmha enable; tensorrt_llm/builder.py turns paged context FMHA off for an
# INT8 KV cache, and for an FP8 one without FP8 context FMHA.
def test_block_reuse_impossible_with_int8_kv():
    e = errors(quantization={"format": "fp8", "kv_cache_dtype": "int8"})
    assert rule_ids(e) == {"block-reuse"}
    assert "INT8 KV cache" in e[0].message and "block_reuse: false" in e[0].message
    plan = plan_deployment(
        spec_of(quantization={"format": "fp8", "kv_cache_dtype": "int8"}, kv_cache={"block_reuse": False})
    )
    assert not plan.errors
    assert "--use_paged_context_fmha" not in plan.tiers[0].engine.argv


def test_block_reuse_impossible_with_fp8_kv_on_int4_weights():
    e = errors(quantization={"format": "int4_awq", "kv_cache_dtype": "fp8"})
    assert rule_ids(e) == {"block-reuse"}
    assert "int4_awq" in e[0].message


def test_block_reuse_needs_paged_kv():
    e = errors(kv_cache={"paged": False, "block_reuse": True})
    assert rule_ids(e) == {"block-reuse"} and "kv_cache.paged" in e[0].message


def draft_tier(**over):
    t = {
        "model": "fixture:llama-3.1-70b",
        "gpu": {"count": 2},
        "parallelism": {"tp": 2},
        "draft": {
            "model": "fixture:llama-3.2-1b",
            "num_draft_tokens": 4,
            "quantization": {"format": "fp8", "kv_cache_dtype": "fp8"},
        },
    }
    t.update(over)
    return t


def test_valid_draft_target_tier():
    assert problems(**draft_tier()) == []


# Source: https://github.com/NVIDIA/TensorRT-LLM/blob/release/1.2/examples/draft_target_model/README.md
# (draft-target speculation: both engines with --use_paged_context_fmha enable).
def test_draft_needs_paged_context_fmha_on_both_engines():
    t = draft_tier()
    t["draft"]["quantization"] = {"format": "fp8", "kv_cache_dtype": "int8"}
    e = errors(**t)
    assert rule_ids(e) == {"draft-paged-context-fmha"} and "on the draft" in e[0].message
    e = errors(**draft_tier(quantization={"format": "fp8", "kv_cache_dtype": "int8"}))
    assert "draft-paged-context-fmha" in rule_ids(e)


# Source: the draft-target README (URL above): the target also gets --speculative_decoding_mode
# draft_tokens_external --max_draft_len K. The planner always adds them; the rule checks the command it derived.
def test_draft_target_flags_checked_on_the_derived_command():
    spec = spec_of(**draft_tier())
    plan = plan_deployment(spec).tiers[0]
    assert not list(rules.rule_draft_target_flags(rules.Ctx(spec.tiers[0], plan)))
    broken = copy.deepcopy(plan)
    i = broken.engine.argv.index("--speculative_decoding_mode")
    del broken.engine.argv[i : i + 4]
    broken.engine.max_num_tokens = 10  # < max_batch_size 8 x (4 + 1)
    e = list(rules.rule_draft_target_flags(rules.Ctx(spec.tiers[0], broken)))
    assert {p.rule for p in e} == {"draft-target-flags"} and len(e) == 2
    assert "draft_tokens_external --max_draft_len 4" in e[0].message


# Source: the draft-target README (URL above): no beam search. The spec has no beam width; engines are planned
# with max_beam_width 1, so the rule is exercised on a plan with a beam engine.
def test_draft_no_beam_search():
    spec = spec_of(**draft_tier())
    plan = copy.deepcopy(plan_deployment(spec).tiers[0])
    plan.draft.engine.max_beam_width = 2
    e = list(rules.rule_draft_no_beam_search(rules.Ctx(spec.tiers[0], plan)))
    assert [p.rule for p in e] == ["draft-no-beam-search"] and "draft engine" in e[0].message


# Source: the BLS loop sends the draft's token ids to the target as draft_input_ids (tensorrtllm_backend
# all_models/inflight_batcher_llm/tensorrt_llm_bls/1/lib/decode.py): same vocabulary (config.json vocab_size).
def test_draft_same_vocabulary():
    t = draft_tier()
    t["draft"]["model"] = "fixture:mistral-7b-v0.3"
    e = errors(**t)
    assert "draft-vocabulary" in rule_ids(e)
    msg = next(p.message for p in e if p.rule == "draft-vocabulary")
    assert "32768" in msg and "128256" in msg


# Source: the draft-target README's Triton workflow (URL above) serves both models with enable_kv_cache_reuse.
def test_draft_needs_block_reuse():
    e = errors(**draft_tier(kv_cache={"block_reuse": False}))
    assert rule_ids(e) == {"draft-needs-block-reuse"}


# Source: kv_cache_free_gpu_mem_fraction is a fraction of the memory free after the model loads
# (https://github.com/triton-inference-server/tensorrtllm_backend/blob/main/docs/model_config.md): two engines on one GPU need fractions summing <= 0.95.
def test_two_engines_fractions_sum():
    t = draft_tier(kv_cache={"free_gpu_mem_fraction": 0.9})
    t["draft"]["kv_cache_free_gpu_mem_fraction"] = 0.1
    e = errors(**t)
    assert rule_ids(e) == {"two-engine-fractions"} and "1.00 > 0.95" in e[0].message
    t["kv_cache"] = {"free_gpu_mem_fraction": 0.8}
    assert not errors(**t)


# Source: TensorRT-LLM docs/source/reference/memory.md (https://github.com/NVIDIA/TensorRT-LLM/blob/release/1.2/docs/source/reference/memory.md): weights +
# activations + KV pool; the KV of one max-length sequence must fit.
def test_tier_must_fit_and_says_by_how_much():
    e = errors(model="fixture:llama-3.1-70b", quantization={"format": "none"})  # 70B BF16 on one H100
    assert rule_ids(e) == {"must-fit"}
    m = (
        plan_deployment(spec_of(model="fixture:llama-3.1-70b", quantization={"format": "none"}))
        .tiers[0]
        .memory
    )
    assert not m.fits and m.max_concurrent_sequences == 0
    need = m.blocks_per_sequence * m.tokens_per_block * m.kv_bytes_per_token
    assert m.shortfall_bytes == -(-need * 10 // 9) - m.free_after_load  # ceil(need / 0.9) - free (free < 0)
    assert f"short by {m.shortfall_bytes / 1024**3:.2f} GiB" in e[0].message
    assert "raise parallelism.tp" in e[0].message


def test_fit_also_fails_when_only_the_kv_is_missing():
    # 8B FP8 fits its weights, but a 128k-token sequence does not fit the KV pool.
    e = errors(
        limits={"max_batch_size": 1, "max_input_len": 126000, "max_output_len": 2000, "max_num_tokens": 8192},
        kv_cache={"max_tokens": 100000},
    )
    assert "must-fit" in rule_ids(e)


# Source: TensorRT-LLM builder.py `_init_max_seq_len` (only a warning there); refused here.
def test_seq_len_past_the_model_context_is_an_error_on_any_runtime():
    lim = {"max_input_len": 130_000, "max_output_len": 2000, "max_batch_size": 1, "max_num_tokens": 8192}
    for runtime in ("trtllm-engine", "cpu-reference"):
        e = [p for p in errors(runtime=runtime, limits=lim) if p.rule == "max-seq-len"]
        assert (
            len(e) == 1
            and "max_position_embeddings 131072" in e[0].message
            and "at most 131072" in e[0].message
        )
    assert not [p for p in problems(limits={**lim, "max_input_len": 129_000}) if p.rule == "max-seq-len"]


def test_cpu_reference_tier_must_fit_its_gpu_target_too():
    # `plan` prints the GPU capacity of every tier; one that does not fit is an error whatever the runtime.
    assert rule_ids(
        errors(runtime="cpu-reference", model="fixture:llama-3.1-70b", quantization={"format": "none"})
    ) == {"must-fit"}


# Source: https://nvidia.github.io/TensorRT-LLM/legacy/tensorrt-backend-removal.html ("TensorRT Backend Removed":
# trtllm-build and the engine flow are gone after the 1.2 line) and the release notes
# (https://nvidia.github.io/TensorRT-LLM/release-notes.html).
def test_newer_trtllm_has_no_engine_flow():
    spec = parse_spec(
        {
            "name": "v",
            "triton": {"trtllm_version": "1.3.0rc2"},
            "tiers": [{"name": "main", "model": "fixture:llama-3.1-8b", "runtime": "trtllm-engine"}],
        }
    )
    plan = plan_deployment(spec)
    assert [p.rule for p in plan.errors] == ["trtllm-version"]
    with pytest.raises(UserError, match="PyTorch backend"):
        rules.raise_for_errors(plan)
    cpu = parse_spec(
        {
            "name": "v",
            "triton": {"trtllm_version": "1.3.0"},
            "tiers": [{"name": "main", "model": "fixture:llama-3.1-8b", "runtime": "cpu-reference"}],
        }
    )
    assert not plan_deployment(cpu).errors
    w = rules.check_deployment(
        parse_spec(
            {
                "name": "v",
                "tiers": [{"name": "main", "model": "fixture:llama-3.1-8b", "runtime": "trtllm-engine"}],
            }
        ),
        installed_trtllm="0.17.0",
    )
    assert [(p.severity, p.rule) for p in w] == [("warning", "trtllm-version")]


def test_cpu_reference_ignores_gpu_rules():
    assert not errors(
        runtime="cpu-reference",
        quantization={"format": "nvfp4", "kv_cache_dtype": "int8"},
        parallelism={"tp": 3},
    )


def test_unknown_gpu_lists_the_known_ones():
    with pytest.raises(UserError) as exc:
        get_gpu("H300")
    for name in known_gpus():
        assert name in str(exc.value)
    assert get_gpu("h100_sxm").name == "H100-SXM" and get_gpu("a100-40gb").name == "A100-40GB"


def test_price_override_changes_cost_only():
    a = plan_deployment(spec_of()).tiers[0].throughput
    b = plan_deployment(spec_of(gpu={"price_per_hour": 2 * 2.99})).tiers[0].throughput
    assert b.decode_tokens_per_s == a.decode_tokens_per_s
    assert b.cost_per_million_output_tokens == pytest.approx(2 * a.cost_per_million_output_tokens, rel=1e-3)


def test_raise_for_errors_counts_the_rest():
    plan = plan_deployment(
        spec_of(
            quantization={"format": "nvfp4", "kv_cache_dtype": "int8"},
            parallelism={"tp": 3},
            gpu={"count": 1},
        )
    )
    with pytest.raises(UserError, match=r"\+\d+ more"):
        rules.raise_for_errors(plan)


# ------------------------------------------------------------------------------------ plan CLI


def test_plan_cli_table_and_json(tmp_path):
    r = CliRunner().invoke(plan_command, [str(SPECS / "llama31-8b-fp8-h100.yaml")])
    assert r.exit_code == 0, r.output
    assert "396 concurrent 2560-token sequences" in r.output and "trtllm-build --checkpoint_dir" in r.output
    r = CliRunner().invoke(plan_command, [str(SPECS / "llama31-8b-fp8-h100.yaml"), "--json"])
    import json

    d = json.loads(r.output)
    assert d["tiers"][0]["memory"]["max_concurrent_sequences"] == 396


def test_plan_cli_prints_the_plan_then_exits_2_on_errors(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: bad\ntiers:\n  - name: main\n    model: fixture:llama-3.1-8b\n    runtime: trtllm-engine\n"
        "    quantization: {format: nvfp4}\n"
    )
    r = CliRunner().invoke(plan_command, [str(spec)])
    assert "tier main" in r.output and "ERROR" in r.output  # the plan is printed first
    assert isinstance(r.exception, UserError) and "Blackwell" in str(r.exception)  # the CLI exits 2 on it


def test_model_reference_resolution(tmp_path):
    from tritonforge.builder.modelref import resolve_model

    assert resolve_model("/nowhere/Meta-Llama-3.1-70B-Instruct").source.startswith("fixture llama-3.1-70b")
    assert resolve_model("fixture:qwen2.5-7b").config["num_key_value_heads"] == 4
    (tmp_path / "config.json").write_text('{"hidden_size": 64}')
    assert resolve_model(str(tmp_path)).checkpoint_dir == tmp_path
    with pytest.raises(UserError, match="no such directory"):
        resolve_model("/nowhere/my-own-model")


def test_qwen_and_mistral_fixtures_plan():
    # Qwen2.5-7B: q/k/v biases; 7.62B parameters. Mistral-7B-v0.3: 7.25B.
    q = plan_deployment(spec_of(model="fixture:qwen2.5-7b", parallelism={"tp": 2}, gpu={"count": 2})).tiers[0]
    assert q.shape.qkv_bias and q.shape.total_params == 7_615_616_512
    m = plan_deployment(spec_of(model="fixture:mistral-7b-v0.3")).tiers[0]
    assert m.shape.total_params == 7_248_023_552
