"""The request plumbing the Triton models share (`tf_common`): word lists and request inputs."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tritonforge.model_repo_templates.tf_common.inputs import RequestInputs, strings
from tritonforge.model_repo_templates.tf_common.word_list import build_word_list, parse_word_list


class Refused(Exception):
    pass


def test_word_list_round_trips_with_the_batch_dimension() -> None:
    words = [[5, 6], [7], [8, 9, 10]]
    built = build_word_list(words)
    assert built.dtype == np.int32 and built.shape == (2, 6)
    assert built[1].tolist() == [2, 3, 6, -1, -1, -1]
    assert parse_word_list(built, "stop_words_list") == words
    assert parse_word_list(built[None], "stop_words_list") == words


def test_empty_words_are_skipped_and_no_word_is_the_empty_list() -> None:
    assert build_word_list([[], [3]]).tolist() == [[3], [1]]
    empty = build_word_list([])
    assert empty.tolist() == [[0], [-1]]
    assert parse_word_list(empty[None], "bad_words_list") == []
    assert parse_word_list(None, "bad_words_list") == []
    assert parse_word_list(np.zeros((1, 2, 0), dtype=np.int32), "bad_words_list") == []


@pytest.mark.parametrize(
    "array",
    [
        np.array([[1, 2, 3]], dtype=np.int32),  # one row
        np.array([[[1, 2], [2, -1]], [[1, 2], [2, -1]]], dtype=np.int32),  # two sequences
        np.array([[1, 2, 3], [2, 2, -1]], dtype=np.int32),  # an offset not past the previous one
        np.array([[1, 2, 3], [2, 5, -1]], dtype=np.int32),  # an offset past the ids
        np.array([[1, 2, 3], [0, 3, -1]], dtype=np.int32),  # an empty first word
    ],
)
def test_a_malformed_word_list_is_refused_naming_the_input(array: np.ndarray) -> None:
    with pytest.raises(Refused, match="^stop_words_list "):
        parse_word_list(array, "stop_words_list", Refused)
    with pytest.raises(ValueError, match="bad_words_list"):
        parse_word_list(array, "bad_words_list")


class _Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


def _pb_utils() -> Any:
    """The one function of triton_python_backend_utils the helpers call, as documented there: the request's
    input tensor of that name, else None (https://github.com/triton-inference-server/python_backend,
    src/resources/triton_python_backend_utils.py, `get_input_tensor_by_name`)."""

    def get_input_tensor_by_name(request: Any, name: str) -> _Tensor | None:
        return next((t for t in request.inputs() if t.name() == name), None)

    return SimpleNamespace(get_input_tensor_by_name=get_input_tensor_by_name)


def _request(**arrays: np.ndarray) -> Any:
    tensors = [_Tensor(name, array) for name, array in arrays.items()]
    return SimpleNamespace(inputs=lambda: tensors)


def test_request_inputs_read_optional_tensors_and_scalars() -> None:
    inputs = RequestInputs(_pb_utils())
    request = _request(max_tokens=np.array([[7]], dtype=np.int32), empty=np.zeros((1, 0), dtype=np.int32))
    assert inputs.optional(request, "missing") is None
    array = inputs.optional(request, "max_tokens")
    assert array is not None and array.tolist() == [[7]]
    assert inputs.scalar(request, "max_tokens", int) == 7
    assert inputs.scalar(request, "missing", int, 3) == 3
    assert inputs.scalar(request, "empty", int, 4) == 4
    assert inputs.scalar(request, "max_tokens", float) == 7.0


def test_request_inputs_look_the_function_up_when_called() -> None:
    """A model binds `RequestInputs(pb_utils)` at import; the module's function is read per call."""
    pb_utils = _pb_utils()
    inputs = RequestInputs(pb_utils)
    pb_utils.get_input_tensor_by_name = lambda request, name: _Tensor(name, np.array([name.encode()]))
    assert inputs.scalar(SimpleNamespace(), "x", bytes) == b"x"


def test_strings_drops_empty_elements_and_decodes_utf8() -> None:
    array = np.array([["stop", "", "fin\u00e9".encode(), b""]], dtype=object)
    assert strings(array) == ["stop", "fin\u00e9"]
    assert strings(None) == []
