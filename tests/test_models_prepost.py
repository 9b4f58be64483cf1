"""preprocessing and postprocessing without a server: request parsing, word lists, errors, mixed batches.

Both run with the tiny demo model's tokenizer; the expected ids come from the `tokenizers` library directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer

from tests.helpers import fake_pb_utils as pb
from tritonforge.model_repo_templates.tf_runtime.detok import ByteTable
from tritonforge.model_repo_templates.tf_runtime.light_tokenizer import load_tokenizer

MAX_INPUT_LEN = 32
MAX_OUTPUT_LEN = 64


@pytest.fixture(scope="module")
def tiny_dir(tf_cache: Path) -> Path:
    from tritonforge.builder.demo_model import materialize

    return materialize("tiny")


@pytest.fixture(scope="module")
def tok(tiny_dir: Path) -> Tokenizer:
    return Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def table(tiny_dir: Path) -> ByteTable:
    return ByteTable(load_tokenizer(tiny_dir))


@pytest.fixture(scope="module")
def pre(tiny_dir: Path) -> Iterator[Any]:
    with pb.load_model("preprocessing") as mod:
        m = mod.TritonPythonModel()
        config = {
            "parameters": pb.params(
                tokenizer_dir=tiny_dir,
                max_input_len=MAX_INPUT_LEN,
                max_output_len=MAX_OUTPUT_LEN,
                max_input_bytes=200,
                add_special_tokens="false",
            )
        }
        m.initialize(pb.model_args("preprocessing", config))
        yield m


@pytest.fixture(scope="module")
def post_module(tiny_dir: Path) -> Iterator[ModuleType]:
    with pb.load_model("postprocessing") as mod:
        yield mod


@pytest.fixture
def post(post_module: ModuleType, tiny_dir: Path) -> Any:
    m = post_module.TritonPythonModel()
    m.initialize(pb.model_args("postprocessing", {"parameters": pb.params(tokenizer_dir=tiny_dir)}))
    return m


def strings(*words: str) -> np.ndarray:
    return np.array([[w.encode() for w in words]], dtype=np.object_)


def pre_request(text: str = "hello world", out_len: int = 8, **extra: Any) -> pb.InferenceRequest:
    return pb.make_request(
        QUERY=strings(text), REQUEST_OUTPUT_LEN=np.array([[out_len]], dtype=np.int32), **extra
    )


def outputs(response: pb.InferenceResponse) -> dict[str, np.ndarray]:
    assert not response.has_error(), response.error()
    return response.outputs()


def error_of(response: pb.InferenceResponse) -> pb.TritonError:
    error = response.error()
    assert error is not None, response.outputs()
    return error


def word_list(tok: Tokenizer, *words: str) -> list[list[int]]:
    ids: list[int] = []
    offsets: list[int] = []
    for w in words:
        ids += tok.encode(w, add_special_tokens=False).ids
        offsets.append(len(ids))
    return [ids, offsets + [-1] * (len(ids) - len(offsets))]


# --------------------------------------------------------------------------- preprocessing
def test_a_plain_request_gives_the_prompt_ids_and_default_ids(
    pre: Any, tok: Tokenizer, tiny_dir: Path
) -> None:
    (response,) = pre.execute([pre_request("hello world")])
    out = outputs(response)
    ids = tok.encode("hello world", add_special_tokens=False).ids
    assert out["INPUT_ID"].tolist() == [ids]
    assert out["REQUEST_INPUT_LEN"].tolist() == [[len(ids)]]
    assert out["OUT_REQUEST_OUTPUT_LEN"].tolist() == [[8]]
    config = json.loads((tiny_dir / "tokenizer_config.json").read_text())
    assert out["OUT_END_ID"].tolist() == [[tok.token_to_id(config["eos_token"])]]
    assert out["OUT_PAD_ID"].tolist() == [[tok.token_to_id(config["pad_token"])]]
    # no word lists, no bias: the backend's "empty" shapes
    assert out["STOP_WORDS_IDS"].tolist() == [[[0], [-1]]]
    assert out["BAD_WORDS_IDS"].tolist() == [[[0], [-1]]]
    assert out["EMBEDDING_BIAS"].shape == (1, 0)
    assert "OUT_PROMPT_TABLE_EXTRA_IDS" not in out


def test_stop_and_bad_words_become_offset_lists(pre: Any, tok: Tokenizer) -> None:
    request = pre_request(STOP_WORDS_DICT=strings("world", "", "the end"), BAD_WORDS_DICT=strings("xyz"))
    out = outputs(pre.execute([request])[0])
    assert out["STOP_WORDS_IDS"].tolist() == [word_list(tok, "world", "the end")]  # the empty word dropped
    assert out["BAD_WORDS_IDS"].tolist() == [word_list(tok, "xyz")]


def test_end_and_pad_ids_from_the_request_win(pre: Any) -> None:
    request = pre_request(END_ID=np.array([[7]], dtype=np.int32), PAD_ID=np.array([[9]], dtype=np.int32))
    out = outputs(pre.execute([request])[0])
    assert (out["OUT_END_ID"].tolist(), out["OUT_PAD_ID"].tolist()) == ([[7]], [[9]])


def test_embedding_bias_adds_each_weight_to_its_word_tokens(pre: Any, tok: Tokenizer) -> None:
    request = pre_request(
        EMBEDDING_BIAS_WORDS=strings("cat", "dog"),
        EMBEDDING_BIAS_WEIGHTS=np.array([[2.0, -1.5]], dtype=np.float32),
    )
    bias = outputs(pre.execute([request])[0])["EMBEDDING_BIAS"].reshape(-1)
    assert bias.size == tok.get_vocab_size(with_added_tokens=True)
    expected = np.zeros_like(bias)
    for word, weight in (("cat", 2.0), ("dog", -1.5)):
        for t in tok.encode(word, add_special_tokens=False).ids:
            expected[t] += weight
    assert np.array_equal(bias, expected) and bias.any()


def test_prompt_table_extra_id_marks_only_ids_past_the_vocabulary(pre: Any) -> None:
    request = pre_request(PROMPT_TABLE_EXTRA_ID=np.array([[5]], dtype=np.uint64))
    out = outputs(pre.execute([request])[0])
    marks = out["OUT_PROMPT_TABLE_EXTRA_IDS"]
    assert marks.shape == out["INPUT_ID"].shape and not marks.any()  # plain text: no prompt-table ids


@pytest.mark.parametrize(
    ("request_kwargs", "named"),
    [
        ({"out_len": 0}, "max_tokens"),
        ({"out_len": MAX_OUTPUT_LEN + 1}, "max_tokens"),
        ({"text": ""}, "text_input is empty"),
        ({"text": "word " * 60}, "max_input_len"),  # under max_input_bytes, over max_input_len tokens
        ({"text": "x" * 201}, "bytes"),  # over max_input_bytes: refused before tokenizing
        (
            {
                "EMBEDDING_BIAS_WORDS": strings("cat", "dog"),
                "EMBEDDING_BIAS_WEIGHTS": np.array([[1.0]], dtype=np.float32),
            },
            "embedding_bias_weights",
        ),
    ],
)
def test_a_bad_request_is_refused_by_name_and_spares_the_batch(
    pre: Any, tok: Tokenizer, request_kwargs: dict[str, Any], named: str
) -> None:
    good1, good2 = pre_request("first one"), pre_request("second", out_len=3)
    responses = pre.execute([good1, pre_request(**request_kwargs), good2])
    assert len(responses) == 3
    error = error_of(responses[1])
    assert error.message().startswith("preprocessing: ") and named in error.message()
    assert error.code() == pb.TritonError.INVALID_ARG
    assert outputs(responses[0])["INPUT_ID"].tolist() == [
        tok.encode("first one", add_special_tokens=False).ids
    ]
    assert outputs(responses[2])["OUT_REQUEST_OUTPUT_LEN"].tolist() == [[3]]


def test_two_prompts_in_one_request_are_refused(pre: Any) -> None:
    request = pb.make_request(QUERY=strings("a", "b"), REQUEST_OUTPUT_LEN=np.array([[4]], dtype=np.int32))
    assert "text_input must hold exactly one string" in error_of(pre.execute([request])[0]).message()


# --------------------------------------------------------------------------- postprocessing
def post_request(tokens: list[int], length: int | None = None, request_id: str = "") -> pb.InferenceRequest:
    return pb.make_request(
        request_id,
        TOKENS_BATCH=np.array([[tokens]], dtype=np.int32).reshape(1, 1, len(tokens)),
        SEQUENCE_LENGTH=np.array([[len(tokens) if length is None else length]], dtype=np.int32),
    )


def text(response: pb.InferenceResponse) -> str:
    return bytes(outputs(response)["OUTPUT"].reshape(-1)[0]).decode()


def test_tokens_become_text_up_to_the_sequence_length(post: Any, tok: Tokenizer) -> None:
    ids = tok.encode("the cat sat on the mat", add_special_tokens=False).ids
    full, cut = post.execute([post_request(ids), post_request(ids + [5, 5, 5], length=len(ids) - 2)])
    assert text(full) == "the cat sat on the mat"
    assert text(cut) == tok.decode(ids[:-2])
    assert outputs(full)["NUM_OUTPUT_TOKENS"].tolist() == [[len(ids)]]
    assert outputs(cut)["NUM_OUTPUT_TOKENS"].tolist() == [[len(ids) - 2]]


def test_ids_outside_the_vocabulary_are_dropped(post: Any, tok: Tokenizer) -> None:
    ids = tok.encode("hello", add_special_tokens=False).ids
    (response,) = post.execute([post_request([-1] + ids + [10**6])])
    assert text(response) == "hello"


def byte_token(table: ByteTable, data: bytes) -> int:
    return next(i for i, b in enumerate(table.table) if b == data)


def test_a_character_split_across_stream_chunks_is_carried_over(post: Any, table: ByteTable) -> None:
    head, tail = byte_token(table, b"\xc3"), byte_token(table, b"\xa9")  # "é" is C3 A9 in UTF-8
    (first,) = post.execute([post_request([head], request_id="r1")])
    (second,) = post.execute([post_request([tail], request_id="r1")])
    assert (text(first), text(second)) == ("", "é")


def test_without_a_request_id_a_split_character_is_replaced(post: Any, table: ByteTable) -> None:
    head, tail = byte_token(table, b"\xc3"), byte_token(table, b"\xa9")
    first, second = post.execute([post_request([head]), post_request([tail])])
    assert (text(first), text(second)) == ("\ufffd", "\ufffd")


def test_streams_are_kept_apart(post: Any, table: ByteTable) -> None:
    head, tail = byte_token(table, b"\xc3"), byte_token(table, b"\xa9")
    a = byte_token(table, b"a")
    post.execute([post_request([head], request_id="s1"), post_request([a], request_id="s2")])
    s2, s1 = post.execute([post_request([a], request_id="s2"), post_request([tail], request_id="s1")])
    assert (text(s1), text(s2)) == ("é", "a")


def test_a_malformed_postprocessing_request_spares_the_batch(post: Any, tok: Tokenizer) -> None:
    ids = tok.encode("ok", add_special_tokens=False).ids
    missing = pb.make_request(TOKENS_BATCH=np.array([[ids]], dtype=np.int32))  # no SEQUENCE_LENGTH
    good, bad, good2 = post.execute([post_request(ids), missing, post_request(ids)])
    assert error_of(bad).message().startswith("postprocessing: ")
    assert text(good) == text(good2) == "ok"
