"""A request's input tensors by name: optional arrays, scalars and string lists.

The model passes its ``triton_python_backend_utils`` module in (`RequestInputs(pb_utils)`): its
``get_input_tensor_by_name(request, name)`` finds the tensor, None when the request did not send it
(https://github.com/triton-inference-server/python_backend, src/resources/triton_python_backend_utils.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


class RequestInputs:
    """Read a request's inputs through the backend's `get_input_tensor_by_name`."""

    def __init__(self, pb_utils: Any) -> None:
        self._pb_utils = pb_utils  # looked up on each call: the module's function is read when it is used

    def optional(self, request: Any, name: str) -> np.ndarray | None:
        """The input as a numpy array, None when the request did not send it."""
        tensor = self._pb_utils.get_input_tensor_by_name(request, name)
        return None if tensor is None else tensor.as_numpy()

    def scalar(self, request: Any, name: str, kind: Callable[[Any], T], default: Any = None) -> Any:
        """The input's first element converted by `kind`; `default` when it is absent or empty."""
        array = self.optional(request, name)
        if array is None or array.size == 0:
            return default
        return kind(array.reshape(-1)[0])


def strings(array: np.ndarray | None) -> list[str]:
    """A BYTES tensor's non-empty elements as text (UTF-8), in order; [] when absent."""
    if array is None:
        return []
    out = []
    for item in array.reshape(-1):
        text = item.decode("utf-8") if isinstance(item, bytes) else str(item)
        if text:
            out.append(text)
    return out
