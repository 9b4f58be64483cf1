"""Streaming through a real Triton: batched postprocessing keeps every stream's text exactly.

The tiny demo repository (streaming on) is served by the CPU Triton; postprocessing has a dynamic batcher,
so concurrent streams' chunks reach one `execute` together and each stream's UTF-8 carry-over must stay
its own.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

pytestmark = pytest.mark.server

PROMPTS = [f"def f{i}(x{i}):\n    return " for i in range(8)]
TEXTS = ["héllo wörld", "日本語のテキスト", "emoji 🙂🙃 ok", "naïve café €5", "π ≈ 3.14159", "ascii only"]


def _grpc_input(grpcclient, name: str, value: np.ndarray, dtype: str):
    t = grpcclient.InferInput(name, list(value.shape), dtype)
    t.set_data_from_numpy(value)
    return t


def _stream_text(grpc_url: str, prompt: str, request_id: str, max_tokens: int) -> tuple[str, int]:
    """Concatenated text_output of one gRPC stream, and how many responses carried text."""
    import tritonclient.grpc as grpcclient

    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(grpc_url)
    inputs = [
        _grpc_input(grpcclient, "text_input", np.array([[prompt.encode()]], dtype=object), "BYTES"),
        _grpc_input(grpcclient, "max_tokens", np.array([[max_tokens]], dtype=np.int32), "INT32"),
        _grpc_input(grpcclient, "min_tokens", np.array([[max_tokens]], dtype=np.int32), "INT32"),
        _grpc_input(grpcclient, "stream", np.array([[True]], dtype=bool), "BOOL"),
    ]
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        client.async_stream_infer("ensemble", inputs, request_id=request_id, enable_empty_final_response=True)
        pieces = []
        deadline = time.time() + 120
        while time.time() < deadline:
            result, error = results.get(timeout=120)
            assert error is None, error
            response = result.get_response()
            if response.outputs:
                pieces.append(result.as_numpy("text_output").reshape(-1)[0].decode())
            final = response.parameters.get("triton_final_response")
            if final is not None and final.bool_param:
                break
        return "".join(pieces), len(pieces)
    finally:
        client.stop_stream()
        client.close()


def test_postprocessing_is_dynamically_batched(tiny_demo_repo) -> None:
    config = (tiny_demo_repo / "postprocessing" / "config.pbtxt").read_text()
    assert "dynamic_batching" in config
    assert "max_queue_delay_microseconds: 0" in config  # no waiting: the first token is not delayed


def test_concurrent_streams_equal_non_streamed_text(tiny_demo_server) -> None:
    url, grpc_url = tiny_demo_server.http_url, tiny_demo_server.grpc_url
    expected = {}
    for p in PROMPTS:
        r = requests.post(
            f"{url}/v2/models/ensemble/generate",
            json={"text_input": p, "max_tokens": 24, "min_tokens": 24, "top_k": 1},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        expected[p] = r.json()["text_output"]
    with ThreadPoolExecutor(
        len(PROMPTS)
    ) as pool:  # 8 live streams: their chunks share postprocessing batches
        got = dict(
            zip(
                PROMPTS,
                pool.map(lambda ip: _stream_text(grpc_url, ip[1], f"s{ip[0]}", 24), enumerate(PROMPTS)),
                strict=True,
            )
        )
    for p in PROMPTS:
        text, pieces = got[p]
        assert pieces > 1
        want = expected[p]
        # A character cut short by max_tokens ends the non-streamed text as U+FFFD; a stream never sends it.
        assert text in (want, want[:-1] if want.endswith("\ufffd") else None), (p, text, want)


def test_interleaved_streams_keep_split_characters(tiny_demo_server, tiny_demo_repo) -> None:
    """Postprocessing called directly, one token per request, streams interleaved in the same batches."""
    import tritonclient.grpc as grpcclient

    from tritonforge.model_repo_templates.tf_runtime.detok import ByteTable
    from tritonforge.model_repo_templates.tf_runtime.light_tokenizer import load_tokenizer

    params = (tiny_demo_repo / "postprocessing" / "config.pbtxt").read_text()
    tokenizer_dir = params.split('key: "tokenizer_dir"')[1].split('string_value: "')[1].split('"')[0]
    tokenizer = load_tokenizer(tokenizer_dir)
    table = ByteTable(tokenizer)
    streams = {f"mb{i}": tokenizer.encode(t, add_special_tokens=False) for i, t in enumerate(TEXTS)}

    def partial(tid: int) -> bool:
        try:
            table.table[tid].decode("utf-8")
            return False
        except UnicodeDecodeError:
            return True

    # The texts really split characters across tokens (else this test would prove nothing).
    assert sum(partial(t) for ids in streams.values() for t in ids) >= 6

    client = grpcclient.InferenceServerClient(tiny_demo_server.grpc_url)
    got = {k: [] for k in streams}
    for step in range(max(len(v) for v in streams.values())):
        live = [(k, ids[step]) for k, ids in streams.items() if step < len(ids)]
        done = threading.Semaphore(0)
        results: dict[str, object] = {}

        def callback(key, result, error, results=results, done=done):
            results[key] = error if error is not None else result
            done.release()

        for key, tid in live:  # all sent before any answer is awaited: they queue together
            inputs = [
                _grpc_input(grpcclient, "TOKENS_BATCH", np.array([[[tid]]], dtype=np.int32), "INT32"),
                _grpc_input(grpcclient, "SEQUENCE_LENGTH", np.array([[1]], dtype=np.int32), "INT32"),
            ]
            client.async_infer(
                "postprocessing",
                inputs,
                request_id=key,
                callback=lambda result, error, key=key: callback(key, result, error),
            )
        for _ in live:
            assert done.acquire(timeout=60)
        for key, _ in live:
            result = results[key]
            assert not isinstance(result, Exception), result
            got[key].append(result.as_numpy("OUTPUT").reshape(-1)[0].decode("utf-8"))
    client.close()
    for (key, pieces), text in zip(got.items(), TEXTS, strict=True):
        assert "".join(pieces) == text, (key, pieces)
        assert "\ufffd" not in "".join(pieces)


def test_engine_stream_interval_first_token_alone_then_groups(tf_cache) -> None:
    """In-process CPU engine: with stream_interval 4 the first chunk holds 1 token, later ones 4 (the rest at
    the end), and the tokens are exactly those of stream_interval 1."""
    from tritonforge.builder.demo_model import model_dir
    from tritonforge.model_repo_templates.tf_runtime.engine import CpuEngine, GenerationRequest

    def run(interval: int) -> list[list[int]]:
        engine = CpuEngine(
            model_dir("tiny"),
            max_batch_size=4,
            max_num_tokens=1024,
            max_input_len=128,
            max_seq_len=256,
            num_threads=1,
            stream_interval=interval,
        )
        chunks: list[list[int]] = []
        done = threading.Event()

        def on_chunk(chunk) -> None:
            if chunk.token_ids:
                chunks.append(list(chunk.token_ids))
            if chunk.finished:
                done.set()

        try:
            engine.submit(
                GenerationRequest(
                    input_ids=[1, 5, 9, 13, 17], max_new_tokens=19, min_tokens=19, top_k=1, streaming=True
                ),
                on_chunk,
            )
            assert done.wait(120)
        finally:
            engine.shutdown()
        return chunks

    one, four = run(1), run(4)
    assert [len(c) for c in one] == [1] * 19
    assert [len(c) for c in four] == [1, 4, 4, 4, 4, 2]
    assert sum(four, []) == sum(one, [])


@pytest.fixture(scope="module")
def interval_server(tmp_path_factory, tf_cache):
    from tests.conftest import tiny_variant
    from tritonforge.builder.spec import load_spec
    from tritonforge.ensembles.render import emit_files, write_repository
    from tritonforge.ensembles.server import TritonServer, free_ports

    d = tmp_path_factory.mktemp("stream-interval")
    spec_path = tiny_variant(
        "cpu-demo.yaml", d, serving={"streaming": True, "exclude_input_in_output": True, "stream_interval": 4}
    )
    files, _ = emit_files(load_spec(spec_path), spec_path.parent)
    write_repository(files, d / "repo")
    with TritonServer(d / "repo", free_ports(), log_path=d / "triton.log") as srv:
        srv.wait_ready(180)
        yield srv


def test_stream_interval_same_text_fewer_responses(interval_server) -> None:
    url, grpc_url = interval_server.http_url, interval_server.grpc_url
    for i, p in enumerate(PROMPTS[:4]):
        r = requests.post(
            f"{url}/v2/models/ensemble/generate",
            json={"text_input": p, "max_tokens": 21, "min_tokens": 21, "top_k": 1},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        want = r.json()["text_output"]
        text, pieces = _stream_text(grpc_url, p, f"iv{i}", 21)
        assert text in (want, want[:-1] if want.endswith("\ufffd") else None), (p, text, want)
        assert 2 <= pieces <= 6  # 1 + 4 * 5 tokens: at most 6 responses with text (was 21)
