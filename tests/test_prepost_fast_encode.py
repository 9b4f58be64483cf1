"""preprocessing's prompt ids come from `encode_batch_fast` (no character offsets): the ids must be exactly
those of the tokenizer's ordinary `encode`, with and without special tokens, for any text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer

from tests.helpers import fake_pb_utils as pb

TEXTS = [
    "hello world",
    "  leading and trailing spaces  ",
    "def f(x):\n\treturn x ** 2  # tabs, newlines\n\n",
    "héllo wörld, naïve café €5",
    "日本語のテキスト and mixed ASCII",
    "emoji 🙂🙃 and a zero-width joiner 👩‍💻",
    "<s> a special-looking token </s> in the text <unk>",
    "x",
    "a" * 300,
    "\u00a0non-breaking\u2003spaces\u200b",
]


@pytest.fixture(scope="module")
def tiny_dir(tf_cache: Path) -> Path:
    from tritonforge.builder.demo_model import materialize

    return materialize("tiny")


def _model(tiny_dir: Path, special: bool) -> Iterator[Any]:
    with pb.load_model("preprocessing") as mod:
        m = mod.TritonPythonModel()
        params = pb.params(
            tokenizer_dir=tiny_dir,
            max_input_len=512,
            max_output_len=16,
            max_input_bytes=4096,
            add_special_tokens="true" if special else "false",
        )
        m.initialize(pb.model_args("preprocessing", {"parameters": params}))
        yield m


@pytest.mark.parametrize("special", [True, False])
def test_prompt_ids_equal_the_tokenizer_encode(tiny_dir: Path, special: bool) -> None:
    tok = Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))
    for m in _model(tiny_dir, special):
        assert m.encode_fast is not None  # the fast path is the one under test
        requests = [
            pb.make_request(
                QUERY=np.array([[t.encode()]], dtype=np.object_),
                REQUEST_OUTPUT_LEN=np.array([[4]], dtype=np.int32),
            )
            for t in TEXTS
        ]
        for text, response in zip(TEXTS, m.execute(requests), strict=True):
            assert not response.has_error(), response.error()
            want = tok.encode(text, add_special_tokens=special).ids
            assert response.outputs()["INPUT_ID"].tolist() == [want], text
            assert response.outputs()["REQUEST_INPUT_LEN"].tolist() == [[len(want)]]
