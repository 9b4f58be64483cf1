"""The CPU engine model and the speculative BLS model through a real Triton server.

The repository is emitted from examples/cpu-demo.yaml on the tiny models with a tiny draft added;
the tests talk to `tensorrt_llm` (the engine model) and `tensorrt_llm_bls` directly over gRPC.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml

pytestmark = [pytest.mark.server, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "def main(argv):\n    "


@pytest.fixture(scope="module")
def server(tmp_path_factory, tf_cache):
    from tritonforge.builder.spec import load_spec
    from tritonforge.ensembles.render import emit_files, write_repository
    from tritonforge.ensembles.server import TritonServer, free_ports

    d = tmp_path_factory.mktemp("runtime-triton")
    data = yaml.safe_load((ROOT / "examples" / "cpu-demo.yaml").read_text())
    tier = data["tiers"][0]
    tier["model"] = "builtin:tiny"
    tier["draft"] = {"model": "builtin:tiny-draft", "num_draft_tokens": 4}
    tier["serving"]["stream_interval"] = 1  # one streamed response per token, as these tests count them
    spec_path = d / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))
    files, _ = emit_files(load_spec(spec_path), d)
    # only the models under test (the ensemble is the lead's, tested in test_e2e_cpu.py)
    files = {k: v for k, v in files.items() if not k.startswith("ensemble/")}
    write_repository(files, d / "repo")
    with TritonServer(
        d / "repo", free_ports(), log_path=d / "triton.log"
    ) as srv:  # stops the server whatever happens
        srv.wait_ready(300)
        yield srv


@pytest.fixture(scope="module")
def tokenizer(server):
    from transformers import AutoTokenizer

    from tritonforge.builder.demo_model import model_dir

    return AutoTokenizer.from_pretrained(str(model_dir("tiny")))


class Streams:
    """One gRPC bidirectional stream; responses collected per request id."""

    def __init__(self, url: str) -> None:
        import tritonclient.grpc as grpcclient

        self.grpc = grpcclient
        self.client = grpcclient.InferenceServerClient(url)
        self.results: dict[str, list] = {}
        self.errors: dict[str, str] = {}
        self.done: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        self.client.start_stream(callback=self._callback)

    def _callback(self, result, error) -> None:
        if error is not None:  # the stream drops the request id of an error: tests send those one at a time
            with self.lock:
                pending = [k for k, ev in self.done.items() if not ev.is_set()]
                if len(pending) == 1:
                    self.errors[pending[0]] = str(error)
                    self.done[pending[0]].set()
                else:
                    self.errors.setdefault("?", str(error))
            return
        resp = result.get_response()
        rid = resp.id
        with self.lock:
            if resp.outputs:
                self.results.setdefault(rid, []).append(result)
            final = resp.parameters.get("triton_final_response")
            if final is not None and final.bool_param:
                self.done[rid].set()

    def tensor(self, name: str, value: np.ndarray, dtype: str):
        t = self.grpc.InferInput(name, list(value.shape), dtype)
        t.set_data_from_numpy(value)
        return t

    def send(self, model: str, inputs: list, rid: str | None = None) -> str:
        rid = rid or uuid.uuid4().hex
        with self.lock:
            self.done.setdefault(rid, threading.Event())
        self.client.async_stream_infer(model, inputs, request_id=rid, enable_empty_final_response=True)
        return rid

    def wait(self, rid: str, timeout: float = 120.0) -> list:
        assert self.done[rid].wait(timeout), f"request {rid} did not finish"
        return self.results.get(rid, [])

    def close(self, cancel: bool = False) -> None:
        # After a failed assertion some requests may still be running: cancel them rather than wait forever.
        pending = any(not ev.is_set() for ev in self.done.values())
        self.client.stop_stream(cancel_requests=cancel or pending)
        self.client.close()


def engine_inputs(s: Streams, ids: list[int], out_len: int, streaming: bool, **extra) -> list:
    inputs = [
        s.tensor("input_ids", np.array([ids], dtype=np.int32), "INT32"),
        s.tensor("input_lengths", np.array([[len(ids)]], dtype=np.int32), "INT32"),
        s.tensor("request_output_len", np.array([[out_len]], dtype=np.int32), "INT32"),
        s.tensor("streaming", np.array([[streaming]], dtype=bool), "BOOL"),
        s.tensor("exclude_input_in_output", np.array([[True]], dtype=bool), "BOOL"),
        s.tensor("end_id", np.array([[extra.pop("end_id", -1)]], dtype=np.int32), "INT32"),
    ]
    for name, (value, dtype) in extra.items():
        inputs.append(s.tensor(name, value, dtype))
    return inputs


def tokens_of(results: list) -> list[int]:
    out: list[int] = []
    for r in results:
        ids = r.as_numpy("output_ids").reshape(-1)
        n = int(r.as_numpy("sequence_length").reshape(-1)[0])
        out.extend(ids[:n].tolist())
    return out


def prompt_ids(i: int, n: int = 20) -> list[int]:
    rng = np.random.default_rng(i)
    return rng.integers(3, 1000, n).tolist()


def metric(server, name: str) -> float:
    text = requests.get(server.metrics_url, timeout=5).text
    m = re.search(rf'^{name}\{{[^}}]*model="tensorrt_llm"[^}}]*\}} ([0-9.e+-]+)$', text, re.M)
    assert m, f"metric {name} not exported"
    return float(m.group(1))


def test_engine_stream_and_non_stream_agree(server):
    s = Streams(server.grpc_url)
    try:
        ids = prompt_ids(1)
        whole = s.wait(s.send("tensorrt_llm", engine_inputs(s, ids, 12, False)))
        assert len(whole) == 1
        streamed = s.wait(s.send("tensorrt_llm", engine_inputs(s, ids, 12, True)))
        assert len(streamed) == 12  # one response per token, each with only the new token
        assert tokens_of(streamed) == tokens_of(whole) and len(tokens_of(whole)) == 12
        r = whole[0]
        assert int(r.as_numpy("num_output_tokens").reshape(-1)[0]) == 12
        assert (
            r.as_numpy("first_token_time_ns").reshape(-1)[0] >= r.as_numpy("arrival_time_ns").reshape(-1)[0]
        )
        # the prompt is echoed unless exclude_input_in_output (TRT-LLM's default)
        inputs = engine_inputs(s, ids, 5, False)
        inputs[4] = s.tensor("exclude_input_in_output", np.array([[False]], dtype=bool), "BOOL")
        echoed = tokens_of(s.wait(s.send("tensorrt_llm", inputs)))
        assert echoed == ids + tokens_of(whole)[:5]
    finally:
        s.close()


def test_engine_16_concurrent_and_batch_of_8_identical(server):
    s = Streams(server.grpc_url)
    try:
        alone = [
            tokens_of(s.wait(s.send("tensorrt_llm", engine_inputs(s, prompt_ids(i, 10 + 3 * i), 10, False))))
            for i in range(8)
        ]
        rids = [
            s.send("tensorrt_llm", engine_inputs(s, prompt_ids(i, 10 + 3 * i), 10, True)) for i in range(8)
        ]
        assert [tokens_of(s.wait(r)) for r in rids] == alone
        counts = [5 + (i * 7) % 23 for i in range(16)]
        rids = [
            s.send("tensorrt_llm", engine_inputs(s, prompt_ids(100 + i), n, True))
            for i, n in enumerate(counts)
        ]
        assert [len(tokens_of(s.wait(r))) for r in rids] == counts
    finally:
        s.close()


def test_engine_cancellation_frees_slots(server):
    stop_s, drop_s = Streams(server.grpc_url), Streams(server.grpc_url)
    try:
        by_stop = [
            stop_s.send("tensorrt_llm", engine_inputs(stop_s, prompt_ids(200 + i), 500, True))
            for i in range(10)
        ]
        by_drop = [
            drop_s.send("tensorrt_llm", engine_inputs(drop_s, prompt_ids(300 + i), 500, True))
            for i in range(10)
        ]
        time.sleep(1.0)
        for rid in by_stop:  # TRT-LLM style: a request with the same id and stop=true
            stop_s.send(
                "tensorrt_llm",
                engine_inputs(stop_s, [0], 1, False, stop=(np.array([[True]]), "BOOL")),
                rid=rid,
            )
        drop_s.close(cancel=True)  # the client goes away
        for rid in by_stop:
            stop_s.wait(rid, 30)
            assert len(tokens_of(stop_s.results.get(rid, []))) < 500
        deadline = time.time() + 30
        while time.time() < deadline and (
            metric(server, "tf_cpu_engine_active_requests") or metric(server, "tf_cpu_engine_queued_requests")
        ):
            time.sleep(0.1)
        assert metric(server, "tf_cpu_engine_active_requests") == 0
        assert metric(server, "tf_cpu_engine_queued_requests") == 0
        assert all(len(tokens_of(drop_s.results.get(r, []))) < 500 for r in by_drop)
        # a following burst is served at full batch
        rids = [
            stop_s.send("tensorrt_llm", engine_inputs(stop_s, prompt_ids(400 + i), 120, True))
            for i in range(8)
        ]
        peak = 0.0
        while not all(stop_s.done[r].is_set() for r in rids):
            peak = max(peak, metric(server, "tf_cpu_engine_active_requests"))
            time.sleep(0.02)
        assert peak == 8
        assert all(len(tokens_of(stop_s.results[r])) == 120 for r in rids)
    finally:
        stop_s.close()


def test_engine_bad_requests_name_the_problem(server):
    s = Streams(server.grpc_url)
    try:
        cases = [
            (engine_inputs(s, [5], 0, False), "request_output_len must be >= 1"),
            (engine_inputs(s, [5] * 10, 5000, False), "max_seq_len"),
            (engine_inputs(s, [5] * 800, 4, False), "max_input_len"),
            (engine_inputs(s, [5, 10**6], 4, False), "outside the vocabulary"),
        ]
        empty = engine_inputs(s, [5], 4, False)
        empty[1] = s.tensor("input_lengths", np.array([[0]], dtype=np.int32), "INT32")
        cases.append((empty, "input_ids is empty"))
        for inputs, needle in cases:
            rid = s.send("tensorrt_llm", inputs)
            s.wait(rid, 30)
            assert needle in s.errors.get(rid, ""), (needle, s.errors.get(rid))
        # wrong dtype is refused by Triton itself, naming the tensor
        bad = engine_inputs(s, [5, 6], 4, False)
        bad[0] = s.tensor("input_ids", np.array([[5, 6]], dtype=np.int64), "INT64")
        rid = s.send("tensorrt_llm", bad)
        s.wait(rid, 30)
        assert "input_ids" in s.errors.get(rid, "") and "INT64" in s.errors.get(rid, ""), s.errors.get(rid)
        assert len(tokens_of(s.wait(s.send("tensorrt_llm", engine_inputs(s, [5, 6, 7], 4, False))))) == 4
    finally:
        s.close()


def bls_inputs(s: Streams, text: str, max_tokens: int, stream: bool) -> list:
    return [
        s.tensor("text_input", np.array([text.encode()], dtype=object), "BYTES"),
        s.tensor("max_tokens", np.array([max_tokens], dtype=np.int32), "INT32"),
        s.tensor("stream", np.array([stream], dtype=bool), "BOOL"),
        s.tensor("exclude_input_in_output", np.array([True], dtype=bool), "BOOL"),
        s.tensor("min_tokens", np.array([max_tokens], dtype=np.int32), "INT32"),
    ]


def test_speculative_bls_equals_target_alone(server, tokenizer):
    from tritonforge.model_repo_templates.tf_runtime.detok import ByteTable

    table = ByteTable(tokenizer)
    s = Streams(server.grpc_url)
    try:
        prompts = [f"{PROMPT}x{i} = {i}\n    " for i in range(8)]
        expected = []
        for p in prompts:
            ids = tokenizer(p)["input_ids"]
            toks = tokens_of(
                s.wait(
                    s.send(
                        "tensorrt_llm",
                        engine_inputs(
                            s,
                            ids,
                            24,
                            False,
                            end_id=2,
                            min_tokens=(np.array([[24]], dtype=np.int32), "INT32"),
                        ),
                    )
                )
            )
            expected.append(table.decode(toks))
        whole = [s.send("tensorrt_llm_bls", bls_inputs(s, p, 24, False)) for p in prompts]
        streamed = [s.send("tensorrt_llm_bls", bls_inputs(s, p, 24, True)) for p in prompts]
        for i in range(8):
            w = s.wait(whole[i])
            assert len(w) == 1, s.errors.get(whole[i])
            assert w[0].as_numpy("text_output").reshape(-1)[0].decode() == expected[i]
            assert int(w[0].as_numpy("num_output_tokens").reshape(-1)[0]) == 24
            rate = float(w[0].as_numpy("acceptance_rate").reshape(-1)[0])
            assert 0.0 <= rate <= 1.0
            st = s.wait(streamed[i])
            assert len(st) > 1
            assert "".join(r.as_numpy("text_output").reshape(-1)[0].decode() for r in st) == expected[i]
            assert sum(int(r.as_numpy("num_output_tokens").reshape(-1)[0]) for r in st) == 24
    finally:
        s.close()


def test_speculative_bls_errors(server):
    s = Streams(server.grpc_url)
    try:
        rid = s.send("tensorrt_llm_bls", bls_inputs(s, "", 8, False))
        s.wait(rid, 30)
        assert "empty" in s.errors.get(rid, "")
        rid = s.send("tensorrt_llm_bls", bls_inputs(s, "x", 0, False))
        s.wait(rid, 30)
        assert "max_tokens" in s.errors.get(rid, "")
        nan = bls_inputs(s, "x", 8, False) + [
            s.tensor("temperature", np.array([np.nan], dtype=np.float32), "FP32"),
            s.tensor("top_k", np.array([5], dtype=np.int32), "INT32"),
        ]
        rid = s.send("tensorrt_llm_bls", nan)
        s.wait(rid, 30)
        assert "temperature must be a finite number" in s.errors.get(rid, ""), s.errors.get(rid)
        rid = s.send("tensorrt_llm_bls", bls_inputs(s, "x", 1000, False))
        s.wait(rid, 30)
        assert "max_tokens must be between 1 and 256" in s.errors.get(rid, ""), s.errors.get(rid)
    finally:
        s.close()
