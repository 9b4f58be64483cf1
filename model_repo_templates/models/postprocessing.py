"""postprocessing: token ids -> text, streaming-safe (spaces and multi-byte characters kept intact)."""

import faulthandler
import os
import sys

# Outside an NGC container tritonforge serves with the CPU Triton of nvidia-pytriton, whose Python stub
# ignores PYTHONPATH; `tritonforge serve` passes the interpreter's paths here instead (unset: no effect).
# The model's own folder comes first: it holds the packages vendored beside this file (tf_runtime, ...).
sys.path[0:0] = [
    p for p in os.environ.get("TRITONFORGE_PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path
]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# A crash of this model's process (the Python backend stub) prints every thread's Python stack to Triton's log.
faulthandler.enable()

import codecs
import json
from collections import OrderedDict

import numpy as np
import triton_python_backend_utils as pb_utils
from tf_runtime.detok import ByteTable
from tf_runtime.light_tokenizer import load_tokenizer

MAX_PENDING_STREAMS = 4096


def _utf8_split(data):
    """Complete characters of `data` (invalid bytes replaced) and the bytes of a character cut short."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = decoder.decode(data, final=False)
    return text, decoder.getstate()[0]


class TritonPythonModel:
    def initialize(self, args):
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        tokenizer = load_tokenizer(params["tokenizer_dir"])
        self.table = ByteTable(tokenizer)
        # Per-request bytes of a character split across chunks; bounded, oldest dropped first.
        self.pending = OrderedDict()

    def _text(self, key, data):
        """Text of the complete characters of `data`; a character cut short waits for the stream's next chunk."""
        if key is None:
            return data.decode("utf-8", errors="replace")
        held = self.pending.pop(key, None)
        if held:
            data = held + data
        try:
            return data.decode("utf-8")  # the common case: whole characters only, no decoder object needed
        except UnicodeDecodeError:
            pass
        text, tail = _utf8_split(data)
        if tail:
            self.pending[key] = tail
            while len(self.pending) > MAX_PENDING_STREAMS:
                self.pending.popitem(last=False)
        return text

    def _one(self, request):
        # one pass over the inputs (get_input_tensor_by_name fetches the whole list for every name)
        arrays = {t.name(): t for t in request.inputs()}
        missing = [n for n in ("TOKENS_BATCH", "SEQUENCE_LENGTH") if n not in arrays]
        if missing:
            raise ValueError(f"missing input {missing[0]}")
        tokens = arrays["TOKENS_BATCH"].as_numpy()
        lengths = arrays["SEQUENCE_LENGTH"].as_numpy()
        # Ensemble steps see the client's request id: with one, a character split across streamed
        # chunks is carried over to the next chunk; without one, it is decoded with replacement.
        key = request.request_id() or None
        tokens = tokens.reshape(-1, tokens.shape[-1])  # [beams, len] (batch dim of 1 folded)
        lengths = lengths.reshape(-1)
        width = tokens.shape[1]
        table = self.table.table
        size = len(table)
        texts, counts = [], 0
        for beam in range(tokens.shape[0]):
            n = max(0, min(int(lengths[beam]) if beam < lengths.size else width, width))
            counts = max(counts, n)
            data = b"".join([table[i] if 0 <= i < size else b"" for i in tokens[beam, :n].tolist()])
            texts.append(self._text(key if beam == 0 else None, data).encode("utf-8"))
        return pb_utils.InferenceResponse(
            [
                pb_utils.Tensor("OUTPUT", np.array([texts], dtype=np.object_)),
                pb_utils.Tensor("NUM_OUTPUT_TOKENS", np.array([[counts]], dtype=np.int32)),
            ]
        )

    def execute(self, requests):
        # With the dynamic batcher, `requests` holds one chunk of every stream that was waiting; they are
        # handled in arrival order, so a stream's chunks meet its carry-over buffer in order.
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except Exception as exc:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"postprocessing: {exc}"))
                )
        return responses
