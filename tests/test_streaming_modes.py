"""The two serving configurations through a real Triton: which endpoints each one answers.

`serving.streaming: true` (default): decoupled `tensorrt_llm`, so `/generate_stream` and gRPC streaming
work and KServe `/infer` is refused by Triton. `serving.streaming: false`: the backend's non-decoupled
configuration, so `/infer` (and gRPC ModelInfer) and `/generate` work and stream=true gets one clear error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.conftest import tiny_variant

pytestmark = pytest.mark.server
PROMPT = "def main(argv):\n    "
BODY = {"text_input": PROMPT, "max_tokens": 12, "min_tokens": 12, "top_k": 1}


def _infer_body(prompt: str, max_tokens: int) -> dict:
    return {
        "inputs": [
            {"name": "text_input", "shape": [1, 1], "datatype": "BYTES", "data": [prompt]},
            {"name": "max_tokens", "shape": [1, 1], "datatype": "INT32", "data": [max_tokens]},
            {"name": "min_tokens", "shape": [1, 1], "datatype": "INT32", "data": [max_tokens]},
            {"name": "top_k", "shape": [1, 1], "datatype": "INT32", "data": [1]},
        ]
    }


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory, tf_cache):
    from tritonforge.builder.spec import load_spec
    from tritonforge.ensembles.render import emit_files, write_repository
    from tritonforge.ensembles.server import TritonServer, free_ports

    d = tmp_path_factory.mktemp("non-streaming")
    spec_path = tiny_variant(
        "cpu-demo.yaml", d, serving={"streaming": False, "exclude_input_in_output": True}
    )
    files, _ = emit_files(load_spec(spec_path), spec_path.parent)
    write_repository(files, d / "repo")
    with TritonServer(d / "repo", free_ports(), log_path=d / "triton.log") as srv:
        srv.wait_ready(180)
        yield srv


def test_non_streaming_configs_are_not_decoupled(plain_server, tiny_demo_repo: Path) -> None:
    plain = Path(plain_server.repo)
    assert "decoupled" not in (plain / "tensorrt_llm" / "config.pbtxt").read_text()
    assert "decoupled: true" in (tiny_demo_repo / "tensorrt_llm" / "config.pbtxt").read_text()
    assert 'key: "streaming"' in (plain / "ensemble" / "config.pbtxt").read_text()


def test_non_streaming_answers_infer_and_generate_alike(plain_server) -> None:
    url = plain_server.http_url
    r = requests.post(f"{url}/v2/models/ensemble/infer", json=_infer_body(PROMPT, 12), timeout=120)
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    g = requests.post(f"{url}/v2/models/ensemble/generate", json=BODY, timeout=120)
    assert g.status_code == 200, g.text
    assert outputs["text_output"] == [g.json()["text_output"]]
    assert outputs["num_output_tokens"] == [12]
    # stream=false, as clients written for the backend's ensemble send it, is accepted
    g2 = requests.post(f"{url}/v2/models/ensemble/generate", json={**BODY, "stream": False}, timeout=120)
    assert g2.status_code == 200 and g2.json()["text_output"] == g.json()["text_output"]


def test_non_streaming_grpc_model_infer(plain_server) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(plain_server.grpc_url)
    inputs = []
    for name, value, dtype in (
        ("text_input", np.array([[PROMPT.encode()]], dtype=object), "BYTES"),
        ("max_tokens", np.array([[12]], dtype=np.int32), "INT32"),
        ("min_tokens", np.array([[12]], dtype=np.int32), "INT32"),
        ("top_k", np.array([[1]], dtype=np.int32), "INT32"),
    ):
        t = grpcclient.InferInput(name, list(value.shape), dtype)
        t.set_data_from_numpy(value)
        inputs.append(t)
    result = client.infer("ensemble", inputs)
    client.close()
    text = result.as_numpy("text_output").reshape(-1)[0].decode()
    want = requests.post(
        f"{plain_server.http_url}/v2/models/ensemble/generate", json=BODY, timeout=120
    ).json()
    assert text == want["text_output"]


def test_non_streaming_refuses_stream_true_clearly(plain_server) -> None:
    url = plain_server.http_url
    r = requests.post(f"{url}/v2/models/ensemble/generate_stream", json={**BODY, "stream": True}, timeout=120)
    text = r.text
    assert "serving.streaming: true" in text and "stream=true" in text, text
    # the server keeps serving
    assert requests.post(f"{url}/v2/models/ensemble/generate", json=BODY, timeout=120).status_code == 200


def test_streaming_answers_generate_stream_and_refuses_infer(tiny_demo_server) -> None:
    url = tiny_demo_server.http_url
    r = requests.post(
        f"{url}/v2/models/ensemble/generate_stream", json={**BODY, "stream": True}, stream=True, timeout=120
    )
    assert r.status_code == 200, r.text
    events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith(b"data:")]
    assert len(events) > 1 and all("error" not in e for e in events)
    assert sum(e["num_output_tokens"] for e in events) == 12
    g = requests.post(f"{url}/v2/models/ensemble/generate", json=BODY, timeout=120)
    assert g.status_code == 200, g.text
    i = requests.post(f"{url}/v2/models/ensemble/infer", json=_infer_body(PROMPT, 12), timeout=120)
    assert i.status_code != 200 and "decoupled" in i.text, (i.status_code, i.text)
