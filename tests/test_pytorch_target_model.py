"""The trtllm-pytorch `tensorrt_llm` model (model_repo_templates/models/tensorrt_llm_pytorch.py), run against a
stand-in of TensorRT-LLM's LLM API (tests/fixtures/llmapi_standin, written from
https://nvidia.github.io/TensorRT-LLM/llm-api/reference.html) and a small fake of Triton's
`triton_python_backend_utils` (the interface of https://github.com/triton-inference-server/python_backend
src/resources/triton_python_backend_utils.py): TensorRT-LLM and a GPU Triton cannot run here.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import math
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

from tritonforge.builder.spec import parse_spec
from tritonforge.ensembles.wiring import TierPaths, plan_repository

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "model_repo_templates" / "models" / "tensorrt_llm_pytorch.py"
STANDIN = ROOT / "tests" / "fixtures" / "llmapi_standin"


# ----------------------------------------------------------------------------------------- fakes


def _fake_pb_utils() -> types.ModuleType:
    pb = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name, array):
            self._name, self._array = name, np.asarray(array)

        def name(self):
            return self._name

        def as_numpy(self):
            return self._array

    class TritonError:
        CANCELLED, INVALID_ARG = "CANCELLED", "INVALID_ARG"

        def __init__(self, message, code=None):
            self.msg, self.code = message, code

        def message(self):
            return self.msg

    class InferenceResponse:
        def __init__(self, output_tensors=None, error=None):
            self._tensors, self.error = output_tensors or [], error

        def output_tensors(self):
            return self._tensors

        def tensor(self, name):
            return next(t.as_numpy() for t in self._tensors if t.name() == name)

    class TritonModelException(Exception):
        pass

    pb.Tensor, pb.TritonError, pb.InferenceResponse = Tensor, TritonError, InferenceResponse
    pb.TritonModelException = TritonModelException
    pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
    pb.get_input_tensor_by_name = lambda req, name: req.by_name.get(name)
    pb.using_decoupled_model_transaction_policy = lambda cfg: cfg["model_transaction_policy"]["decoupled"]
    return pb


class Sender:
    def __init__(self):
        self.responses: list[tuple[object, int]] = []
        self.done = threading.Event()
        self.cancelled = False
        self.after_final = 0

    def send(self, response=None, flags=0):
        if self.done.is_set():
            self.after_final += 1
        self.responses.append((response, flags))
        if flags & 1:
            self.done.set()

    def is_cancelled(self):
        return self.cancelled

    def outputs(self):
        return [r for r, _ in self.responses if r is not None and r.error is None]

    def tokens(self):
        return [int(t) for r in self.outputs() for t in r.tensor("output_ids").reshape(-1)]


class Request:
    def __init__(self, pb, request_id="", **inputs):
        self.by_name = {k: pb.Tensor(k, np.asarray(v)) for k, v in inputs.items()}
        self.sender = Sender()
        self._id = request_id

    def inputs(self):
        return list(self.by_name.values())

    def request_id(self):
        return self._id

    def get_response_sender(self):
        return self.sender


# --------------------------------------------------------------------------------------- fixtures

SPEC = {
    "name": "pt",
    "tiers": [
        {
            "name": "main",
            "model": "/models/Meta-Llama-3.1-8B-Instruct",
            "runtime": "trtllm-pytorch",
            "quantization": {"format": "fp8", "kv_cache_dtype": "fp8"},
            "limits": {"max_batch_size": 16, "max_input_len": 512, "max_output_len": 256},
            "draft": {"model": "/models/Llama-3.2-1B-Instruct", "num_draft_tokens": 3},
        }
    ],
    "triton": {"trtllm_version": "1.2.1"},
}


def engine_config(spec_data: dict) -> dict:
    """The rendered `tensorrt_llm` config.pbtxt as Triton hands it to `initialize` (JSON of the ModelConfig)."""
    from google.protobuf import json_format, text_format

    from tritonforge.ensembles.render import _environment, render_model
    from tritonforge.ensembles.triton_schema import model_config_pb2 as mc

    spec = parse_spec(spec_data)
    paths = {"main": TierPaths("/ckpt/main", "/ckpt/tok", "/ckpt/draft")}
    model = next(m for m in plan_repository(spec, paths, "t").models if m.role == "engine")
    text = render_model(_environment(), model)[f"{model.name}/config.pbtxt"].decode()
    cfg = text_format.Parse(text, mc.ModelConfig())
    return json_format.MessageToDict(cfg, preserving_proto_field_name=True)


@pytest.fixture()
def env(monkeypatch):
    """(model module, fake pb_utils, stand-in module) with a fresh stand-in state."""
    pb = _fake_pb_utils()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    monkeypatch.syspath_prepend(str(STANDIN))
    monkeypatch.syspath_prepend(str(ROOT / "model_repo_templates"))  # tf_common, vendored beside model.py
    for name in [m for m in sys.modules if m == "tensorrt_llm" or m.startswith("tensorrt_llm.")]:
        monkeypatch.delitem(sys.modules, name)
    import tensorrt_llm._standin as standin

    monkeypatch.setattr(standin, "__version__", "1.2.1")
    monkeypatch.setattr(standin.LLM, "instances", [])
    monkeypatch.setattr(standin.SamplingParams, "created", [])
    loader = importlib.machinery.SourceFileLoader("tf_pytorch_engine_model", str(TEMPLATE))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    yield mod, pb, standin


def start(env_, spec_data=SPEC):
    mod, _pb, _ = env_
    model = mod.TritonPythonModel()
    model.initialize(
        {"model_config": json.dumps(engine_config(spec_data)), "model_instance_name": "tensorrt_llm_0"}
    )
    return model


@pytest.fixture()
def model(env):
    """The model started on the default spec, finalized after the test."""
    started = start(env)
    yield started
    started.finalize()


def run(model, pb, timeout=10.0, **inputs) -> Request:
    req = Request(pb, **inputs)
    model.execute([req])
    assert req.sender.done.wait(timeout), "no final response"
    return req


def toy_sequence(last: int, n: int, vocab: int = 1000) -> list[int]:
    """What the stand-in generates after `last` (its documented toy rule)."""
    out = []
    for _ in range(n):
        last = (last * 7 + 3) % vocab
        out.append(last)
    return out


PROMPT = np.array([[11, 12, 13]], dtype=np.int32)


def base(**extra):
    return {
        "input_ids": PROMPT,
        "input_lengths": np.array([[3]], np.int32),
        "request_output_len": np.array([[6]], np.int32),
        "end_id": np.array([[999]], np.int32),
        **extra,
    }


# ------------------------------------------------------------------------------------------ tests


def test_initialize_builds_the_llm_from_the_emitted_kwargs(env, model):
    mod, pb, standin = env
    (llm,) = standin.LLM.instances
    assert llm.model == "/ckpt/main"
    kv = llm.kwargs["kv_cache_config"]
    assert isinstance(kv, standin.KvCacheConfig) and kv.dtype == "fp8" and kv.enable_block_reuse is True
    spec_cfg = llm.kwargs["speculative_config"]
    assert isinstance(spec_cfg, standin.DraftTargetDecodingConfig)
    assert spec_cfg.max_draft_len == 3 and spec_cfg.draft_path == "/ckpt/draft"
    assert isinstance(llm.kwargs["cuda_graph_config"], standin.CudaGraphConfig)
    assert llm.kwargs["max_seq_len"] == 512 + 256


@pytest.mark.parametrize("version", ["0.21.0", "1.2.1", "1.3.0"])
def test_draft_path_field_is_pinned_per_version(env, version):
    """Each release accepts only its own draft-path field (the stand-in follows the docs per release)."""
    mod, pb, standin = env
    standin.__version__ = version
    ok = {**SPEC, "triton": {"trtllm_version": version}}
    model = start(env, ok)
    assert standin.LLM.instances[-1].kwargs["speculative_config"].draft_path == "/ckpt/draft"
    model.finalize()
    other = "1.3.0" if version != "1.3.0" else "0.21.0"  # a spec pinned to another release fails to load here
    with pytest.raises(TypeError, match="unexpected keyword"):
        start(env, {**SPEC, "triton": {"trtllm_version": other}})


def test_streaming_sends_each_step_and_a_final(env, model):
    mod, pb, _ = env
    req = run(model, pb, **base(streaming=np.array([[True]])))
    outs = req.sender.outputs()
    assert req.sender.tokens() == toy_sequence(13, 6)
    assert len(outs) == 6 and [f for _, f in req.sender.responses][-1] == 1
    assert sum(int(r.tensor("num_output_tokens").reshape(-1)[0]) for r in outs) == 6
    assert req.sender.after_final == 0


def test_non_streaming_one_response_with_prompt_unless_excluded(env, model):
    mod, pb, _ = env
    req = run(model, pb, **base(exclude_input_in_output=np.array([[False]])))
    assert len(req.sender.outputs()) == 1
    assert req.sender.tokens() == [11, 12, 13] + toy_sequence(13, 6)
    req = run(model, pb, **base())  # the emitted default: exclude_input_in_output true
    assert req.sender.tokens() == toy_sequence(13, 6)


def test_multi_token_stop_word_ends_the_request_and_aborts_generation(env, model):
    mod, pb, standin = env
    seq = toy_sequence(13, 6)
    word = seq[2:4]
    stop = np.array([[word, [2, -1]]], dtype=np.int32)
    req = run(model, pb, **base(stop_words_list=stop, streaming=np.array([[True]])))
    assert req.sender.tokens() == seq[:4]  # the stop word kept, as the C++ backend does
    assert standin.LLM.instances[0].requests[-1].aborted


def test_sampling_mapping(env, model):
    mod, pb, standin = env
    run(model, pb, **base())
    greedy = standin.SamplingParams.created[-1]
    assert (greedy.top_k, greedy.top_p, greedy.temperature, greedy.max_tokens, greedy.end_id) == (
        1,
        None,
        None,
        6,
        999,
    )
    req = run(
        model,
        pb,
        **base(
            runtime_top_k=np.array([[5]], np.int32),
            runtime_top_p=np.array([[0.9]], np.float32),
            temperature=np.array([[0.7]], np.float32),
            seed=np.array([[3]], np.uint64),
            min_tokens=np.array([[2]], np.int32),
            return_log_probs=np.array([[True]]),
            bad_words_list=np.array([[[toy_sequence(13, 1)[0]], [1]]], np.int32),
        ),
    )
    sp = standin.SamplingParams.created[-1]
    assert (
        sp.top_k == 5
        and math.isclose(sp.top_p, 0.9, rel_tol=1e-6)
        and math.isclose(sp.temperature, 0.7, rel_tol=1e-6)
    )
    assert (sp.seed, sp.min_tokens, sp.logprobs, sp.bad_token_ids) == (3, 2, 1, [toy_sequence(13, 1)[0]])
    (out,) = req.sender.outputs()
    assert toy_sequence(13, 1)[0] not in req.sender.tokens()
    lp = out.tensor("output_log_probs").reshape(-1)
    assert len(lp) == 6 and np.allclose(lp, -math.log(2.0))
    assert math.isclose(float(out.tensor("cum_log_probs").reshape(-1)[0]), -6 * math.log(2.0), rel_tol=1e-5)


def test_triton_cancellation_aborts_and_ends_with_cancelled(env, model, monkeypatch):
    mod, pb, standin = env
    monkeypatch.setattr(standin, "STEP_S", 0.01)
    model.cancel_period_s = 0.005
    req = Request(pb, **base(request_output_len=np.array([[100000]], np.int32), streaming=np.array([[True]])))
    model.execute([req])
    deadline = time.time() + 10
    while not req.sender.outputs() and time.time() < deadline:
        time.sleep(0.005)
    req.sender.cancelled = True
    assert req.sender.done.wait(10)
    last, flags = req.sender.responses[-1]
    assert flags == 1 and last.error is not None and last.error.code == "CANCELLED"
    assert standin.LLM.instances[0].requests[-1].aborted
    time.sleep(0.05)
    assert req.sender.after_final == 0
    assert not model.live  # nothing left registered


def test_stop_request_ends_the_request_with_that_id(env, model, monkeypatch):
    mod, pb, standin = env
    monkeypatch.setattr(standin, "STEP_S", 0.01)
    req = Request(
        pb,
        request_id="r1",
        **base(request_output_len=np.array([[100000]], np.int32), streaming=np.array([[True]])),
    )
    model.execute([req])
    while not req.sender.outputs():
        time.sleep(0.005)
    stop = run(model, pb, request_id="r1", stop=np.array([[True]]), **base())
    assert stop.sender.responses == [(None, 1)]
    assert req.sender.done.wait(10)
    assert req.sender.responses[-1][1] == 1 and all(
        r is None or r.error is None for r, _ in req.sender.responses
    )
    assert standin.LLM.instances[0].requests[-1].aborted


@pytest.mark.parametrize(
    "extra, needle",
    [
        ({"beam_width": np.array([[4]], np.int32)}, "beam_width=4"),
        ({"draft_input_ids": np.array([[1, 2]], np.int32)}, "draft_input_ids"),
        ({"request_output_len": np.array([[0]], np.int32)}, "request_output_len"),
        ({"stop_words_list": np.array([[[1, 2], [5, -1]]], np.int32)}, "stop_words_list"),
    ],
)
def test_bad_requests_are_invalid_arg_and_others_still_served(env, model, extra, needle):
    mod, pb, _ = env
    bad = run(model, pb, **base(**extra))
    ((resp, flags),) = bad.sender.responses
    assert flags == 1 and resp.error.code == "INVALID_ARG" and needle in resp.error.message()
    assert run(model, pb, **base()).sender.tokens() == toy_sequence(13, 6)
