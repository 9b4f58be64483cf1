"""The client contract: our ensemble, tensorrt_llm and BLS tensors against TensorRT-LLM's Triton backend.

A client written for the backend's `ensemble` must work unchanged against ours, so every tensor the
backend declares for a decoder-only model must exist here with the same name, data type, dims and
`optional` flag. The backend's lists are written out below from its public configs (not copied files):

  https://github.com/NVIDIA/TensorRT-LLM/blob/release/1.2/triton_backend/all_models/inflight_batcher_llm/
    ensemble/config.pbtxt, tensorrt_llm/config.pbtxt, tensorrt_llm_bls/config.pbtxt
  (the tree the triton-inference-server/tensorrtllm_backend 1.2.x releases take as their `tensorrt_llm`
  submodule; checked against the stored copies at commits 2a9abd95 (ensemble, tensorrt_llm) and 0193dbd4
  (tensorrt_llm_bls)). `${logits_datatype}` and `${prompt_embedding_table_data_type}` are filled with
  TYPE_FP32 / TYPE_FP16, as the backend's examples/draft_target_model/README.md and
  docs/model_config.md do.

Left out on purpose (not part of the decoder-only contract): encoder-decoder tensors
(`decoder_text_input`, `encoder_*`, `decoder_input_*`, `cross_attention_mask`, `skip_cross_attn_blocks`),
multimodal ones (`image_*`, `video_bytes_input`, `mrope_*`) and disaggregated serving
(`context_phase_params`). The backend's ensemble lists `kv_cache_alloc_total_blocks` twice; once here.

The second half sends such a client's requests through a real Triton serving the CPU demo.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent

B, I32, I64, U64, F32, F16, S = (
    "TYPE_BOOL",
    "TYPE_INT32",
    "TYPE_INT64",
    "TYPE_UINT64",
    "TYPE_FP32",
    "TYPE_FP16",
    "TYPE_STRING",
)
OPT, REQ = True, False

# name: (data_type, dims, optional) -- the backend's ensemble/config.pbtxt input [...]
BACKEND_ENSEMBLE_INPUTS = {
    "text_input": (S, [1], REQ),
    "max_tokens": (I32, [1], REQ),
    "num_return_sequences": (I32, [1], OPT),
    "bad_words": (S, [-1], OPT),
    "stop_words": (S, [-1], OPT),
    "exclude_input_in_output": (B, [1], OPT),
    "end_id": (I32, [1], OPT),
    "pad_id": (I32, [1], OPT),
    "top_k": (I32, [1], OPT),
    "top_p": (F32, [1], OPT),
    "temperature": (F32, [1], OPT),
    "length_penalty": (F32, [1], OPT),
    "repetition_penalty": (F32, [1], OPT),
    "min_tokens": (I32, [1], OPT),
    "presence_penalty": (F32, [1], OPT),
    "frequency_penalty": (F32, [1], OPT),
    "seed": (U64, [1], OPT),
    "return_log_probs": (B, [1], OPT),
    "return_context_logits": (B, [1], OPT),
    "return_generation_logits": (B, [1], OPT),
    "return_perf_metrics": (B, [1], OPT),
    "return_num_input_tokens": (B, [1], OPT),
    "return_num_output_tokens": (B, [1], OPT),
    "beam_width": (I32, [1], OPT),
    "stream": (B, [1], OPT),
    "prompt_embedding_table": (F16, [-1, -1], OPT),
    "prompt_table_extra_id": (U64, [1], OPT),
    "prompt_vocab_size": (I32, [1], OPT),
    "embedding_bias_words": (S, [-1], OPT),
    "embedding_bias_weights": (F32, [-1], OPT),
    "lora_task_id": (U64, [1], OPT),
    "lora_weights": (F16, [-1, -1], OPT),
    "lora_config": (I32, [-1, 3], OPT),
    "guided_decoding_guide_type": (S, [1], OPT),
    "guided_decoding_guide": (S, [1], OPT),
}
# ensemble/config.pbtxt output [...] (outputs carry no optional flag)
BACKEND_ENSEMBLE_OUTPUTS = {
    "text_output": (S, [-1]),
    "cum_log_probs": (F32, [-1]),
    "output_log_probs": (F32, [-1, -1]),
    "context_logits": (F32, [-1, -1]),
    "generation_logits": (F32, [-1, -1, -1]),
    "batch_index": (I32, [1]),
    "sequence_index": (I32, [1]),
    "kv_cache_alloc_new_blocks": (I32, [1]),
    "kv_cache_reused_blocks": (I32, [1]),
    "kv_cache_alloc_total_blocks": (I32, [1]),
    "arrival_time_ns": (I64, [1]),
    "first_scheduled_time_ns": (I64, [1]),
    "first_token_time_ns": (I64, [1]),
    "last_token_time_ns": (I64, [1]),
    "acceptance_rate": (F32, [1]),
    "total_accepted_draft_tokens": (I32, [1]),
    "total_draft_tokens": (I32, [1]),
    "num_input_tokens": (I32, [1]),
    "num_output_tokens": (I32, [1]),
}
# The ensemble's tensorrt_llm step: input_map key (model tensor) <- value (ensemble tensor), client inputs only.
BACKEND_ENGINE_STEP_RENAMES = {
    "runtime_top_k": "top_k",
    "runtime_top_p": "top_p",
    "len_penalty": "length_penalty",
    "streaming": "stream",
    "temperature": "temperature",
    "repetition_penalty": "repetition_penalty",
    "min_tokens": "min_tokens",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "seed": "seed",
    "return_log_probs": "return_log_probs",
    "return_context_logits": "return_context_logits",
    "return_generation_logits": "return_generation_logits",
    "return_perf_metrics": "return_perf_metrics",
    "return_num_input_tokens": "return_num_input_tokens",
    "return_num_output_tokens": "return_num_output_tokens",
    "num_return_sequences": "num_return_sequences",
    "beam_width": "beam_width",
    "exclude_input_in_output": "exclude_input_in_output",
    "prompt_embedding_table": "prompt_embedding_table",
    "prompt_vocab_size": "prompt_vocab_size",
    "lora_task_id": "lora_task_id",
    "lora_weights": "lora_weights",
    "lora_config": "lora_config",
    "guided_decoding_guide_type": "guided_decoding_guide_type",
    "guided_decoding_guide": "guided_decoding_guide",
}
# ... and what goes through preprocessing: embedding_bias_words/_weights -> EMBEDDING_BIAS -> embedding_bias,
# bad/stop words -> *_WORDS_IDS -> bad_words_list / stop_words_list.
BACKEND_PREPROCESSED = {
    "embedding_bias": ("EMBEDDING_BIAS", ("EMBEDDING_BIAS_WORDS", "embedding_bias_words")),
    "bad_words_list": ("BAD_WORDS_IDS", ("BAD_WORDS_DICT", "bad_words")),
    "stop_words_list": ("STOP_WORDS_IDS", ("STOP_WORDS_DICT", "stop_words")),
}

# tensorrt_llm/config.pbtxt input [...], decoder-only part: (data_type, dims, optional)
BACKEND_ENGINE_INPUTS = {
    "input_ids": (I32, [-1], OPT),
    "input_lengths": (I32, [1], REQ),
    "request_output_len": (I32, [1], REQ),
    "num_return_sequences": (I32, [1], OPT),
    "draft_input_ids": (I32, [-1], OPT),
    "draft_logits": (F32, [-1, -1], OPT),
    "draft_acceptance_threshold": (F32, [1], OPT),
    "end_id": (I32, [1], OPT),
    "pad_id": (I32, [1], OPT),
    "stop_words_list": (I32, [2, -1], OPT),
    "bad_words_list": (I32, [2, -1], OPT),
    "embedding_bias": (F32, [-1], OPT),
    "beam_width": (I32, [1], OPT),
    "temperature": (F32, [1], OPT),
    "runtime_top_k": (I32, [1], OPT),
    "runtime_top_p": (F32, [1], OPT),
    "runtime_top_p_min": (F32, [1], OPT),
    "runtime_top_p_decay": (F32, [1], OPT),
    "runtime_top_p_reset_ids": (I32, [1], OPT),
    "len_penalty": (F32, [1], OPT),
    "early_stopping": (B, [1], OPT),
    "repetition_penalty": (F32, [1], OPT),
    "min_tokens": (I32, [1], OPT),
    "beam_search_diversity_rate": (F32, [1], OPT),
    "presence_penalty": (F32, [1], OPT),
    "frequency_penalty": (F32, [1], OPT),
    "seed": (U64, [1], OPT),
    "return_log_probs": (B, [1], OPT),
    "return_context_logits": (B, [1], OPT),
    "return_generation_logits": (B, [1], OPT),
    "return_perf_metrics": (B, [1], OPT),
    "return_num_input_tokens": (B, [1], OPT),
    "return_num_output_tokens": (B, [1], OPT),
    "exclude_input_in_output": (B, [1], OPT),
    "stop": (B, [1], OPT),
    "streaming": (B, [1], OPT),
    "prompt_embedding_table": (F16, [-1, -1], OPT),
    "prompt_table_extra_ids": (U64, [-1], OPT),
    "prompt_vocab_size": (I32, [1], OPT),
    "lora_task_id": (U64, [1], OPT),
    "lora_weights": (F16, [-1, -1], OPT),
    "lora_config": (I32, [-1, 3], OPT),
    "retention_token_range_starts": (I32, [-1], OPT),
    "retention_token_range_ends": (I32, [-1], OPT),
    "retention_token_range_priorities": (I32, [-1], OPT),
    "retention_token_range_durations_ms": (I32, [-1], OPT),
    "retention_decode_priority": (I32, [1], OPT),
    "retention_decode_duration_ms": (I32, [1], OPT),
    "guided_decoding_guide_type": (S, [1], OPT),
    "guided_decoding_guide": (S, [1], OPT),
    "lookahead_window_size": (I32, [1], OPT),
    "lookahead_ngram_size": (I32, [1], OPT),
    "lookahead_verification_set_size": (I32, [1], OPT),
}
BACKEND_ENGINE_OUTPUTS = {
    "output_ids": (I32, [-1, -1]),
    "sequence_length": (I32, [-1]),
    **{k: v for k, v in BACKEND_ENSEMBLE_OUTPUTS.items() if k != "text_output"},
}
# tensorrt_llm_bls/config.pbtxt: the ensemble's inputs plus these two (outputs: the ensemble's)
BACKEND_BLS_EXTRA_INPUTS = {"num_draft_tokens": (I32, [1], OPT), "use_draft_logits": (B, [1], OPT)}


def _load(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    return text_format.Parse(path.read_text(), mc.ModelConfig())


def _tensors(items, with_optional: bool = True) -> dict:
    from tritonclient.grpc import model_config_pb2 as mc

    out = {}
    for t in items:
        dt = mc.DataType.Name(t.data_type)
        out[t.name] = (dt, list(t.dims), t.optional) if with_optional else (dt, list(t.dims))
    return out


def _emit(tmp_path: Path, example: str, **tier_overrides) -> Path:
    from tritonforge.builder.spec import load_spec
    from tritonforge.ensembles.render import emit_files, write_repository

    data = yaml.safe_load((ROOT / "examples" / example).read_text())
    data["tiers"][0].update(tier_overrides)
    spec = tmp_path / example
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    files, _ = emit_files(load_spec(spec), spec.parent)
    write_repository(files, tmp_path / "repo")
    return tmp_path / "repo"


@pytest.fixture(scope="module")
def gpu_repo(tmp_path_factory) -> Path:
    return _emit(tmp_path_factory.mktemp("gpu-contract"), "llama3.1-8b-fp8-h100.yaml")


@pytest.fixture(scope="module")
def draft_repo(tmp_path_factory) -> Path:
    return _emit(tmp_path_factory.mktemp("gpu-draft-contract"), "llama3.1-70b-fp8-tp2-draft-h100.yaml")


def _mismatches(ours: dict, theirs: dict) -> list[str]:
    return [f"{n}: ours {ours.get(n)} vs backend {v}" for n, v in theirs.items() if ours.get(n) != v]


def test_ensemble_inputs_and_outputs_are_the_backends(gpu_repo) -> None:
    cfg = _load(gpu_repo / "ensemble" / "config.pbtxt")
    ins, outs = _tensors(cfg.input), _tensors(cfg.output, with_optional=False)
    assert _mismatches(ins, BACKEND_ENSEMBLE_INPUTS) == []
    assert _mismatches(outs, BACKEND_ENSEMBLE_OUTPUTS) == []
    # nothing a backend client would not know
    assert set(ins) == set(BACKEND_ENSEMBLE_INPUTS) and set(outs) == set(BACKEND_ENSEMBLE_OUTPUTS)


def test_ensemble_feeds_the_engine_under_the_backends_names(gpu_repo) -> None:
    cfg = _load(gpu_repo / "ensemble" / "config.pbtxt")
    steps = {s.model_name: s for s in cfg.ensemble_scheduling.step}
    eng, pre = steps["tensorrt_llm"], steps["preprocessing"]
    assert {
        k: v for k, v in eng.input_map.items() if k in BACKEND_ENGINE_STEP_RENAMES
    } == BACKEND_ENGINE_STEP_RENAMES
    for engine_in, (pre_out, (pre_in, client_in)) in BACKEND_PREPROCESSED.items():
        assert pre.input_map[pre_in] == client_in
        assert eng.input_map[engine_in] == pre.output_map[pre_out]
    assert pre.input_map["EMBEDDING_BIAS_WEIGHTS"] == "embedding_bias_weights"
    # every engine output a backend client reads reaches the ensemble under its own name
    for name in BACKEND_ENSEMBLE_OUTPUTS:
        if name not in ("text_output", "num_output_tokens"):
            assert eng.output_map[name] == name, name


def test_gpu_engine_model_declares_the_backends_tensors(gpu_repo) -> None:
    cfg = _load(gpu_repo / "tensorrt_llm" / "config.pbtxt")
    assert cfg.backend == "tensorrtllm"
    assert _mismatches(_tensors(cfg.input), BACKEND_ENGINE_INPUTS) == []
    assert _mismatches(_tensors(cfg.output, with_optional=False), BACKEND_ENGINE_OUTPUTS) == []
    # pass-through: every engine input the ensemble maps exists on the engine model
    ens = _load(gpu_repo / "ensemble" / "config.pbtxt")
    eng_step = next(s for s in ens.ensemble_scheduling.step if s.model_name == "tensorrt_llm")
    assert set(eng_step.input_map) <= set(_tensors(cfg.input))


def test_cpu_engine_model_has_the_same_contract(tmp_path) -> None:
    repo = _emit(tmp_path, "cpu-demo.yaml")
    gpu = _load(repo / "tensorrt_llm" / "config.pbtxt")
    assert gpu.backend == "python"
    assert _mismatches(_tensors(gpu.input), BACKEND_ENGINE_INPUTS) == []
    assert _mismatches(_tensors(gpu.output, with_optional=False), BACKEND_ENGINE_OUTPUTS) == []
    ens = _load(repo / "ensemble" / "config.pbtxt")
    assert _mismatches(_tensors(ens.input), BACKEND_ENSEMBLE_INPUTS) == []


def test_speculative_bls_takes_the_backends_bls_inputs(draft_repo) -> None:
    cfg = _load(draft_repo / "tensorrt_llm_bls" / "config.pbtxt")
    ins = {k: (v[0], v[1], v[2]) for k, v in _tensors(cfg.input).items()}
    assert _mismatches(ins, {**BACKEND_ENSEMBLE_INPUTS, **BACKEND_BLS_EXTRA_INPUTS}) == []
    assert _mismatches(_tensors(cfg.output, with_optional=False), BACKEND_ENSEMBLE_OUTPUTS) == []


# ---------------------------------------------------------------------------------- real Triton


def _http(url: str, model: str, body: dict, stream: bool = False):
    path = "generate_stream" if stream else "generate"
    r = requests.post(f"{url}/v2/models/{model}/{path}", json=body, timeout=120, stream=stream)
    if not stream:
        return r.status_code, r.json()
    events = [
        json.loads(line[5:])
        for line in r.iter_lines(decode_unicode=True)
        if line and line.startswith("data:")
    ]
    return r.status_code, events


@pytest.mark.server
@pytest.mark.slow
def test_backend_client_requests_work_over_http(tiny_demo_server) -> None:
    url = tiny_demo_server.http_url
    base = {"text_input": "def main(argv):\n    ", "max_tokens": 24, "min_tokens": 24}
    code, plain = _http(url, "ensemble", base)
    assert code == 200, plain
    code, pen = _http(
        url,
        "ensemble",
        {
            **base,
            "repetition_penalty": 50.0,
            "presence_penalty": 1.0,
            "frequency_penalty": 0.5,
            "length_penalty": 1.0,
            "beam_width": 1,
            "return_perf_metrics": True,
            "return_num_input_tokens": True,
        },
    )
    assert code == 200, pen
    assert pen["text_output"] != plain["text_output"]  # the penalties reached the engine (were not dropped)
    assert pen["num_input_tokens"] > 0 and pen["kv_cache_alloc_total_blocks"] >= 1
    assert pen["first_token_time_ns"] >= pen["first_scheduled_time_ns"] >= pen["arrival_time_ns"] > 0
    # embedding bias through preprocessing: a huge weight on one word makes it the whole output
    code, biased = _http(
        url,
        "ensemble",
        {
            **base,
            "max_tokens": 4,
            "min_tokens": 4,
            "embedding_bias_words": ["return"],
            "embedding_bias_weights": [1e4],
        },
    )
    assert code == 200, biased
    text = biased["text_output"]
    assert text.strip() and set(text.replace(" ", "")) <= set("return"), (
        text
    )  # only tokens of the biased word


@pytest.mark.server
@pytest.mark.slow
def test_beam_width_lora_and_guided_decoding_get_clear_errors(tiny_demo_server) -> None:
    url = tiny_demo_server.http_url
    base = {"text_input": "x = ", "max_tokens": 4}
    for extra, name in (
        ({"beam_width": 2}, "beam_width"),
        ({"lora_task_id": 3}, "lora_task_id"),
        ({"guided_decoding_guide_type": "json", "guided_decoding_guide": "{}"}, "guided_decoding"),
    ):
        code, body = _http(url, "ensemble", {**base, **extra})
        assert code == 400, body
        assert name in body["error"] and "CPU reference engine" in body["error"], body
    assert _http(url, "ensemble", base)[0] == 200  # and the server keeps serving


def _grpc_inputs(grpcclient, values: dict):
    types = {bool: "BOOL", np.int32: "INT32", np.float32: "FP32", np.uint64: "UINT64", object: "BYTES"}
    out = []
    for name, (value, dtype) in values.items():
        arr = np.array([[value]] if not isinstance(value, list) else [value], dtype=dtype)
        t = grpcclient.InferInput(name, list(arr.shape), types[dtype])
        t.set_data_from_numpy(arr)
        out.append(t)
    return out


def _grpc_stream(server, values: dict, request_id: str):
    import queue

    import tritonclient.grpc as grpcclient

    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        client.async_stream_infer(
            "ensemble",
            _grpc_inputs(grpcclient, values),
            request_id=request_id,
            enable_empty_final_response=True,
        )
        got = []
        while True:
            result, error = results.get(timeout=120)
            if error is not None:
                return got, str(error)
            resp = result.get_response()
            if resp.outputs:
                got.append(result)
            if resp.parameters["triton_final_response"].bool_param:
                return got, None
    finally:
        client.stop_stream()
        client.close()


@pytest.mark.server
@pytest.mark.slow
def test_backend_client_requests_work_over_grpc(tiny_demo_server) -> None:
    base = {
        "text_input": (b"def f(x):\n    ", object),
        "max_tokens": (np.int32(8), np.int32),
        "stream": (True, bool),
        "top_k": (np.int32(40), np.int32),
        "temperature": (np.float32(1.2), np.float32),
        "seed": (np.uint64(11), np.uint64),
    }
    got, err = _grpc_stream(
        tiny_demo_server,
        {
            **base,
            "repetition_penalty": (np.float32(1.3), np.float32),
            "beam_width": (np.int32(1), np.int32),
            "num_return_sequences": (np.int32(2), np.int32),
            "return_generation_logits": (True, bool),
        },
        "grpc-contract-1",
    )
    assert err is None, err
    seqs = {int(r.as_numpy("sequence_index").reshape(-1)[0]) for r in got}
    assert seqs == {0, 1}  # one stream per returned sequence, each naming its sequence_index
    gen = [r.as_numpy("generation_logits") for r in got if r.as_numpy("generation_logits") is not None]
    assert gen and all(g.ndim == 4 and g.shape[-1] > 100 for g in gen)
    got, err = _grpc_stream(
        tiny_demo_server, {**base, "beam_width": (np.int32(2), np.int32)}, "grpc-contract-2"
    )
    assert err is not None and "beam_width=2" in err and "unexpected inference input" not in err, err
