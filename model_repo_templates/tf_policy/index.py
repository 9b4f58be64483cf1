"""Nearest-neighbour search over normalized vectors: hnswlib when installed, else exact numpy.

`SemanticIndex` keeps one index per cache namespace (the hash of the output-affecting parameters),
so a semantic match is only ever found among entries generated with identical parameters.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

try:  # optional: exact numpy search is the fallback
    import hnswlib
except ImportError:  # pragma: no cover - depends on the environment
    hnswlib = None


class BruteIndex:
    """Exact inner-product search; fine to ~20k vectors per namespace."""

    def __init__(self, dim: int, initial: int = 256) -> None:
        self.dim = dim
        self._vecs = np.zeros((initial, dim), np.float32)
        self._labels: list[int] = []
        self._row: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._labels)

    def add(self, label: int, vec: np.ndarray) -> None:
        if label in self._row:
            self._vecs[self._row[label]] = vec
            return
        n = len(self._labels)
        if n == self._vecs.shape[0]:
            self._vecs = np.concatenate([self._vecs, np.zeros_like(self._vecs)])
        self._vecs[n] = vec
        self._labels.append(label)
        self._row[label] = n

    def remove(self, label: int) -> None:
        row = self._row.pop(label, None)
        if row is None:
            return
        last = len(self._labels) - 1
        if row != last:
            moved = self._labels[last]
            self._vecs[row] = self._vecs[last]
            self._labels[row] = moved
            self._row[moved] = row
        self._labels.pop()

    def search(self, vec: np.ndarray, k: int = 1) -> list[tuple[int, float]]:
        n = len(self._labels)
        if n == 0:
            return []
        sims = self._vecs[:n] @ vec
        k = min(k, n)
        idx = np.argpartition(-sims, k - 1)[:k] if k < n else np.arange(n)
        idx = idx[np.argsort(-sims[idx])]
        return [(self._labels[i], float(sims[i])) for i in idx]


class HnswIndex:
    """hnswlib HNSW graph (inner product), growing by doubling; deleted slots are reused."""

    def __init__(
        self, dim: int, initial: int = 1024, m: int = 16, ef_construction: int = 48, ef: int = 64
    ) -> None:
        self.dim = dim
        self._ix = hnswlib.Index(space="ip", dim=dim)
        self._ix.init_index(
            max_elements=initial, ef_construction=ef_construction, M=m, allow_replace_deleted=True
        )
        self._ix.set_ef(ef)
        self._live: set[int] = set()
        self._deleted = 0

    def __len__(self) -> int:
        return len(self._live)

    def add(self, label: int, vec: np.ndarray) -> None:
        if label in self._live:
            self.remove(label)
        if self._deleted == 0 and self._ix.get_current_count() >= self._ix.get_max_elements():
            self._ix.resize_index(self._ix.get_max_elements() * 2)
        self._ix.add_items(
            vec.reshape(1, -1), np.array([label], dtype=np.uint64), replace_deleted=self._deleted > 0
        )
        if self._deleted > 0:
            self._deleted -= 1
        self._live.add(label)

    def add_many(self, labels: list[int], vecs: np.ndarray) -> None:
        need = self._ix.get_current_count() + len(labels)
        if need > self._ix.get_max_elements():
            self._ix.resize_index(max(need, self._ix.get_max_elements() * 2))
        self._ix.add_items(vecs, np.asarray(labels, dtype=np.uint64))
        self._live.update(labels)

    def remove(self, label: int) -> None:
        if label in self._live:
            self._ix.mark_deleted(label)
            self._live.discard(label)
            self._deleted += 1

    def search(self, vec: np.ndarray, k: int = 1) -> list[tuple[int, float]]:
        k = min(k, len(self._live))
        if k == 0:
            return []
        try:
            labels, dists = self._ix.knn_query(vec.reshape(1, -1), k=k)
        except RuntimeError:  # too few live elements reachable
            return []
        return [(int(lab), 1.0 - float(d)) for lab, d in zip(labels[0], dists[0], strict=True)]


def new_index(dim: int, prefer_hnsw: bool = True) -> Any:
    return HnswIndex(dim) if (prefer_hnsw and hnswlib is not None) else BruteIndex(dim)


class SemanticIndex:
    """Namespace -> vector index, with entry keys mapped to integer labels. Thread-safe."""

    def __init__(self, dim: int, prefer_hnsw: bool = True) -> None:
        self.dim = dim
        self.prefer_hnsw = prefer_hnsw
        self._lock = threading.Lock()
        self._ns: dict[str, Any] = {}
        self._key: dict[str, tuple[str, int]] = {}
        self._label_key: dict[int, str] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._key)

    def __contains__(self, key: str) -> bool:
        return key in self._key

    def add(self, ns: str, key: str, vec: np.ndarray) -> None:
        vec = np.asarray(vec, dtype=np.float32).reshape(-1)
        if vec.shape[0] != self.dim:
            raise ValueError(f"vector has {vec.shape[0]} dims, index has {self.dim}")
        with self._lock:
            if key in self._key:
                self._remove_locked(key)
            ix = self._ns.get(ns)
            if ix is None:
                ix = self._ns[ns] = new_index(self.dim, self.prefer_hnsw)
            label = self._next
            self._next += 1
            ix.add(label, vec)
            self._key[key] = (ns, label)
            self._label_key[label] = key

    def bulk_add(self, ns: str, keys: list[str], vecs: np.ndarray) -> None:
        """Fast initial load of many new keys into one namespace."""
        with self._lock:
            keys = [k for k in keys if k not in self._key]
            if not keys:
                return
            ix = self._ns.get(ns)
            if ix is None:
                ix = self._ns[ns] = new_index(self.dim, self.prefer_hnsw)
            labels = list(range(self._next, self._next + len(keys)))
            self._next += len(keys)
            if hasattr(ix, "add_many"):
                ix.add_many(labels, np.asarray(vecs[: len(keys)], dtype=np.float32))
            else:
                for lab, v in zip(labels, vecs, strict=False):
                    ix.add(lab, v)
            for k, lab in zip(keys, labels, strict=True):
                self._key[k] = (ns, lab)
                self._label_key[lab] = k

    def remove(self, key: str) -> None:
        with self._lock:
            self._remove_locked(key)

    def _remove_locked(self, key: str) -> None:
        hit = self._key.pop(key, None)
        if hit is None:
            return
        ns, label = hit
        self._label_key.pop(label, None)
        ix = self._ns.get(ns)
        if ix is not None:
            ix.remove(label)
            if len(ix) == 0:
                del self._ns[ns]

    def search(self, ns: str, vec: np.ndarray, k: int = 1) -> list[tuple[str, float]]:
        """Up to k (key, cosine) pairs in namespace `ns`, best first."""
        with self._lock:
            ix = self._ns.get(ns)
            if ix is None:
                return []
            found = ix.search(np.asarray(vec, dtype=np.float32).reshape(-1), k)
            return [(self._label_key[lab], sim) for lab, sim in found if lab in self._label_key]

    def clear(self) -> None:
        with self._lock:
            self._ns.clear()
            self._key.clear()
            self._label_key.clear()


class GatedIndex:
    """Two vector spaces over the same keys, for a semantic cache with a cheap first stage.

    `static` holds every key's vector from the static (bag-of-tokens) embedding: searched first, it is
    the gate. The dense (MiniLM) vector of a key is computed only when a query first lets that key
    through the gate, then kept (`set_dense`); each key's normalized prompt is kept to compute it from.
    Presents SemanticIndex's bookkeeping (len, in, remove, clear), so an eviction leaves both spaces.
    """

    def __init__(self, dense_dim: int, static_dim: int, prefer_hnsw: bool = True) -> None:
        self.dim = dense_dim
        self.static = SemanticIndex(static_dim, prefer_hnsw)
        self._lock = threading.Lock()
        self._text: dict[str, str] = {}
        self._dense: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.static)

    def __contains__(self, key: str) -> bool:
        return key in self.static

    def add(
        self, ns: str, key: str, static_vec: np.ndarray, text: str, dense: np.ndarray | None = None
    ) -> None:
        """Index `key` (normalized prompt `text`) by its static vector, with its dense one when known."""
        self.static.add(ns, key, static_vec)
        with self._lock:
            self._text[key] = text
            if dense is not None:
                self._dense[key] = np.asarray(dense, dtype=np.float32).reshape(-1)
            else:
                self._dense.pop(key, None)

    def set_dense(self, key: str, vec: np.ndarray) -> None:
        """Keep the dense vector of `key` (ignored when `key` left the index meanwhile)."""
        with self._lock:
            if key in self._text:
                self._dense[key] = np.asarray(vec, dtype=np.float32).reshape(-1)

    def candidates(self, ns: str, vec: np.ndarray, k: int, gate: float) -> list[tuple[str, float]]:
        """Up to k keys of namespace `ns` whose static cosine with `vec` is at least `gate`, best first."""
        return [(key, s) for key, s in self.static.search(ns, vec, k) if s >= gate]

    def dense_state(self, keys: list[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """(the dense vectors known for `keys`, the texts of those still without one); keys gone are left out."""
        known: dict[str, np.ndarray] = {}
        todo: dict[str, str] = {}
        with self._lock:
            for key in keys:
                vec = self._dense.get(key)
                if vec is not None:
                    known[key] = vec
                elif key in self._text:
                    todo[key] = self._text[key]
        return known, todo

    def dense_count(self) -> int:
        with self._lock:
            return len(self._dense)

    def remove(self, key: str) -> None:
        self.static.remove(key)
        with self._lock:
            self._text.pop(key, None)
            self._dense.pop(key, None)

    def clear(self) -> None:
        self.static.clear()
        with self._lock:
            self._text.clear()
            self._dense.clear()
