"""`TritonServer` serves hand-written repositories unchanged: their Python models import this environment's packages.

The Python backend's stub embeds Python in isolated mode, so PYTHONPATH is ignored; what it does honour is
where `python3` is on PATH (its prefix and a venv's pyvenv.cfg are found from there: CPython 3.11
Modules/getpath.py, https://github.com/python/cpython). The model below cooperates in nothing: no sys.path
edits, no TRITONFORGE_* variables; it imports `tokenizers` and `transformers` at module import time, as the
TensorRT-LLM backend's own preprocessing/postprocessing models do.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

from tritonforge.ensembles.server import TritonServer, free_ports, locate_triton

CONFIG = """name: "handwritten"
backend: "python"
max_batch_size: 0
input [ { name: "TEXT", data_type: TYPE_STRING, dims: [ 1 ] } ]
output [ { name: "IDS", data_type: TYPE_INT32, dims: [ -1 ] },
         { name: "WHERE", data_type: TYPE_STRING, dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU, count: 1 } ]
parameters { key: "tokenizer_dir" value: { string_value: "%s" } }
"""

MODEL = """import json
import sys

import numpy as np
import tokenizers
import transformers
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        path = json.loads(args["model_config"])["parameters"]["tokenizer_dir"]["string_value"]
        self.tok = transformers.AutoTokenizer.from_pretrained(path)
        self.where = json.dumps({"prefix": sys.prefix, "transformers": transformers.__file__,
                                 "tokenizers": tokenizers.__file__})

    def execute(self, requests):
        out = []
        for r in requests:
            text = pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy()[0].decode()
            ids = np.array(self.tok.encode(text), dtype=np.int32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("IDS", ids), pb_utils.Tensor(
                "WHERE", np.array([self.where.encode()], dtype=np.object_))]))
        return out
"""


def test_handwritten_model_importing_transformers_is_ready_and_answers(
    tmp_path: Path, tf_cache: Path
) -> None:
    from transformers import AutoTokenizer

    from tritonforge.builder.demo_model import materialize

    tok_dir = str(materialize("demo"))
    repo = tmp_path / "repo"
    (repo / "handwritten" / "1").mkdir(parents=True)
    (repo / "handwritten" / "config.pbtxt").write_text(CONFIG % tok_dir)
    (repo / "handwritten" / "1" / "model.py").write_text(MODEL)
    install = locate_triton(prefer_path=False)
    assert "TRITONFORGE_PYTHONPATH" not in MODEL  # the model does nothing to find packages
    with TritonServer(repo, free_ports(), install=install, log_path=tmp_path / "triton.log") as server:
        server.wait_ready(180)
        body = {
            "inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["def fibonacci(n):"]}]
        }
        req = urllib.request.Request(
            f"{server.http_url}/v2/models/handwritten/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
            outputs = {o["name"]: o["data"] for o in json.loads(r.read())["outputs"]}
    assert outputs["IDS"] == AutoTokenizer.from_pretrained(tok_dir).encode("def fibonacci(n):")
    where = json.loads(outputs["WHERE"][0])
    assert where["prefix"] == sys.prefix  # this interpreter's environment (a venv here), not the base one
    import tokenizers
    import transformers

    assert where["transformers"] == transformers.__file__ and where["tokenizers"] == tokenizers.__file__
