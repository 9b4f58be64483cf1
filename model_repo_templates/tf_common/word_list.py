"""TensorRT-LLM stop/bad word lists: a [2, N] int32 array, row 0 the words' token ids one after another, row 1
each word's cumulative end offset, padded with -1 (the layout of the tensorrtllm_backend preprocessing model,
https://github.com/triton-inference-server/tensorrtllm_backend, all_models/inflight_batcher_llm/preprocessing/1/model.py,
`_to_word_list_format`). Requests carry it with a batch dimension: [1, 2, N].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def build_word_list(words: Sequence[Sequence[int]]) -> np.ndarray:
    """[2, N] from token-id lists (empty ones skipped); [[0], [-1]] when there is no word."""
    ids: list[int] = []
    offsets: list[int] = []
    for word in words:
        if len(word):
            ids.extend(int(t) for t in word)
            offsets.append(len(ids))
    if not ids:
        return np.array([[0], [-1]], dtype=np.int32)
    offsets += [-1] * (len(ids) - len(offsets))
    return np.array([ids, offsets], dtype=np.int32)


def parse_word_list(
    array: np.ndarray | None, name: str, error: type[Exception] = ValueError
) -> list[list[int]]:
    """[2, N] (or [1, 2, N]) word list -> token-id lists; [] when absent or empty.

    The first -1 offset ends the list. Anything else malformed (another shape, an offset not past the
    previous one or past the ids) raises `error` naming the input `name`: a wrong list is refused, never
    cut short, so a stop word is not silently dropped.
    """
    if array is None or array.size == 0:
        return []
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.shape[0] != 2:
        raise error(
            f"{name} must have shape [2, N] or [1, 2, N] (ids; cumulative end offsets), got {list(a.shape)}"
        )
    ids, offsets = a[0].tolist(), a[1].tolist()
    words: list[list[int]] = []
    start = 0
    for raw in offsets:
        end = int(raw)
        if end < 0:
            break
        if end <= start or end > len(ids):
            raise error(f"{name} has an invalid offset {end} (ids has {len(ids)} entries)")
        words.append([int(x) for x in ids[start:end]])
        start = end
    return words
