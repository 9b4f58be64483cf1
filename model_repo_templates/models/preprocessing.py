"""preprocessing: text -> token ids, stop/bad word lists, embedding bias, end/pad ids (tensorrtllm_backend contract)."""

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

# One prompt per call: a thread pool would only add a hand-off (tokenizers reads this variable,
# https://github.com/huggingface/tokenizers, tokenizers/src/utils/parallelism.rs).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json

import numpy as np
import triton_python_backend_utils as pb_utils
from tf_common.inputs import strings
from tf_common.word_list import build_word_list
from tf_runtime.light_tokenizer import LightTokenizer, load_tokenizer


def _invalid(message):
    """An INVALID_ARG error (HTTP 400): the request, not the server, is at fault."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)


class TritonPythonModel:
    def initialize(self, args):
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        self.tokenizer = load_tokenizer(params["tokenizer_dir"])
        self.add_special_tokens = params.get("add_special_tokens", "true") == "true"
        self.max_input_len = int(params["max_input_len"])
        self.max_output_len = int(params["max_output_len"])
        # Longer text cannot fit max_input_len tokens: refused before the tokenizer sees it.
        self.max_input_bytes = int(params.get("max_input_bytes") or 0)
        self.vocab_size = len(self.tokenizer)
        self.end_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.end_id
        # What a request without words, bias or ids gets: built once, never written to (each response
        # copies its tensors out).
        self.no_words = self._word_list([])[None]
        self.no_bias = np.zeros((1, 0), dtype=np.float32)
        self.end_out = np.array([[self.end_id]], dtype=np.int32)
        self.pad_out = np.array([[self.pad_id]], dtype=np.int32)
        # The prompt's ids without the character offsets `encode` also computes: the same ids, ~20 % less
        # tokenizer time (`encode_batch_fast`, tokenizers >= 0.20,
        # https://github.com/huggingface/tokenizers/pull/1587); only on the tokenizer.json we load ourselves.
        backend = self.tokenizer.backend_tokenizer if isinstance(self.tokenizer, LightTokenizer) else None
        self.encode_fast = getattr(backend, "encode_batch_fast", None)

    def _word_list(self, words):
        """[2, N]: row 0 flat token ids, row 1 cumulative end offsets padded with -1 (the backend's preprocessing layout)."""
        return build_word_list([self.tokenizer.encode(word, add_special_tokens=False) for word in words])

    def _words(self, raw):
        """[1, 2, N] word list of a BYTES input (None: absent)."""
        words = strings(raw)
        return self._word_list(words)[None] if words else self.no_words

    def _embedding_bias(self, raw_words, raw_weights):
        """[1, vocab] bias: each word's weight added to every token of the word; [1, 0] without words."""
        words = (
            []
            if raw_words is None
            else [w.decode("utf-8") if isinstance(w, bytes) else str(w) for w in raw_words.reshape(-1)]
        )
        weights = [] if raw_weights is None else [float(x) for x in raw_weights.reshape(-1)]
        if len(words) != len(weights):
            raise ValueError(
                f"embedding_bias_words has {len(words)} entries but embedding_bias_weights has {len(weights)}; "
                "send one weight per word"
            )
        if not words:
            return self.no_bias
        bias = np.zeros((self.vocab_size,), dtype=np.float32)
        for word, weight in zip(words, weights, strict=False):
            for token in self.tokenizer.encode(word, add_special_tokens=False):
                if 0 <= token < self.vocab_size:
                    bias[token] += weight
        return bias[None]

    def _one(self, request):
        # One pass over the inputs: get_input_tensor_by_name walks the whole list again for every name.
        inputs = {t.name(): t for t in request.inputs()}

        def opt(name):
            t = inputs.get(name)
            return None if t is None else t.as_numpy()

        query = inputs["QUERY"].as_numpy().reshape(-1)
        if query.size != 1:
            raise ValueError("text_input must hold exactly one string")
        raw = query[0] if isinstance(query[0], bytes) else str(query[0]).encode("utf-8", errors="replace")
        if self.max_input_bytes and len(raw) > self.max_input_bytes:
            raise ValueError(
                f"text_input is {len(raw)} bytes, more than max_input_len {self.max_input_len} tokens can hold "
                f"(at most {self.max_input_bytes} bytes); shorten it"
            )
        text = raw.decode("utf-8", errors="replace")
        if not text:
            raise ValueError("text_input is empty; send a non-empty prompt")
        out_len = int(inputs["REQUEST_OUTPUT_LEN"].as_numpy().reshape(-1)[0])
        if out_len < 1 or out_len > self.max_output_len:
            wrap = " (a value past 2^31-1 wraps around in the INT32 tensor)" if out_len < 1 else ""
            raise ValueError(f"max_tokens must be between 1 and {self.max_output_len} (got {out_len}){wrap}")
        if self.encode_fast is not None:
            ids = self.encode_fast([text], add_special_tokens=self.add_special_tokens)[0].ids
        else:
            ids = self.tokenizer.encode(text, add_special_tokens=self.add_special_tokens)
        if len(ids) > self.max_input_len:
            raise ValueError(
                f"prompt has {len(ids)} tokens, more than max_input_len {self.max_input_len}; shorten it"
            )
        end = opt("END_ID")
        pad = opt("PAD_ID")
        end_out = self.end_out if end is None else np.array([[int(end.reshape(-1)[0])]], dtype=np.int32)
        pad_out = self.pad_out if pad is None else np.array([[int(pad.reshape(-1)[0])]], dtype=np.int32)
        bias = self._embedding_bias(opt("EMBEDDING_BIAS_WORDS"), opt("EMBEDDING_BIAS_WEIGHTS"))
        outputs = {
            "INPUT_ID": np.array([ids], dtype=np.int32),
            "REQUEST_INPUT_LEN": np.array([[len(ids)]], dtype=np.int32),
            "BAD_WORDS_IDS": self._words(opt("BAD_WORDS_DICT")),
            "STOP_WORDS_IDS": self._words(opt("STOP_WORDS_DICT")),
            "OUT_END_ID": end_out,
            "OUT_PAD_ID": pad_out,
            "OUT_REQUEST_OUTPUT_LEN": np.array([[out_len]], dtype=np.int32),
            "EMBEDDING_BIAS": bias,
        }
        extra = opt("PROMPT_TABLE_EXTRA_ID")
        if extra is not None and extra.size:
            # The extra id marks prompt-table tokens (ids past the vocabulary) for KV reuse; other tokens get 0.
            ids_arr = np.array(ids, dtype=np.int64)
            marked = np.where(ids_arr >= self.vocab_size, int(extra.reshape(-1)[0]), 0).astype(np.uint64)
            outputs["OUT_PROMPT_TABLE_EXTRA_IDS"] = marked[None]
        return pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in outputs.items()])

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except Exception as exc:  # a bad request must never take the model down
                responses.append(pb_utils.InferenceResponse(error=_invalid(f"preprocessing: {exc}")))
        return responses
