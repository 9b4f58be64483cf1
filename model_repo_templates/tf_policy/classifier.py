"""A portable linear routing classifier: logistic regression over sentence embeddings.

Stored as JSON (no pickle), read with numpy only, so it runs inside a stock Triton container.
Training (`train`) needs scikit-learn and runs in `tritonforge router train`, never in Triton.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import DEFAULT_MARKERS
from .router import estimate_tokens, find_markers

FORMAT = "tritonforge-router-classifier"
VERSION = 1
DEFAULT_MAX_TOKENS = 64


def extra_features(text: str, max_tokens: int | None, markers: Sequence[str]) -> np.ndarray:
    """Hand-made features appended to the embedding (scaled to ~[0, 1])."""
    return np.array(
        [
            math.log1p(estimate_tokens(text)) / 7.0,
            math.log1p(max_tokens or DEFAULT_MAX_TOKENS) / 7.0,
            min(len(find_markers(text, tuple(markers))), 3) / 3.0,
        ],
        dtype=np.float32,
    )


@dataclass
class LinearClassifier:
    classes: list[str]
    coef: np.ndarray  # (1, D) for two classes, else (C, D)
    intercept: np.ndarray
    embedding_model: str = "builtin:all-minilm-l6-v2"
    markers: list[str] = field(default_factory=lambda: list(DEFAULT_MARKERS))
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.coef.shape[1]) - 3

    def features(self, text: str, vec: Any, max_tokens: int | None) -> np.ndarray:
        v = np.asarray(vec, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.dim:
            raise ValueError(f"embedding has {v.shape[0]} dims, the classifier expects {self.dim}")
        return np.concatenate([v, extra_features(text, max_tokens, self.markers)])

    def proba(self, x: np.ndarray) -> np.ndarray:
        s = self.coef @ x + self.intercept
        if len(self.classes) == 2 and s.shape[0] == 1:
            p1 = 1.0 / (1.0 + math.exp(-float(s[0])))
            return np.array([1.0 - p1, p1])
        e = np.exp(s - s.max())
        return e / e.sum()

    def predict(self, text: str, vec: Any, max_tokens: int | None = None) -> tuple[str, float]:
        p = self.proba(self.features(text, vec, max_tokens))
        i = int(np.argmax(p))
        return self.classes[i], float(p[i])

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "embedding_model": self.embedding_model,
                "dim": self.dim,
                "extra_features": ["log_prompt_tokens", "log_max_tokens", "markers"],
                "markers": self.markers,
                "classes": self.classes,
                "coef": [[round(float(x), 7) for x in row] for row in self.coef],
                "intercept": [round(float(x), 7) for x in self.intercept],
                "metrics": self.metrics,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> LinearClassifier:
        d = json.loads(text)
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"not a router classifier file (format must be {FORMAT!r})")
        if d.get("version") != VERSION:
            raise ValueError(
                f"router classifier version {d.get('version')!r} is not supported (want {VERSION})"
            )
        coef = np.asarray(d["coef"], dtype=np.float32)
        intercept = np.asarray(d["intercept"], dtype=np.float32)
        classes = [str(c) for c in d["classes"]]
        if coef.ndim != 2 or coef.shape[0] != intercept.shape[0] or coef.shape[1] != int(d["dim"]) + 3:
            raise ValueError("router classifier: coef/intercept/dim shapes disagree")
        if len(classes) < 2 or (coef.shape[0] != 1 and coef.shape[0] != len(classes)):
            raise ValueError("router classifier: classes and coef rows disagree")
        return cls(
            classes,
            coef,
            intercept,
            str(d.get("embedding_model", "")),
            list(d.get("markers", [])),
            dict(d.get("metrics") or {}),
        )

    @classmethod
    def load(cls, path: str) -> LinearClassifier:
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())


def read_labelled(lines: Sequence[str]) -> list[dict[str, Any]]:
    """JSONL rows {"prompt"|"text": str, "tier"|"label": str, "max_tokens"?: int}; raises ValueError."""
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {n}: not JSON ({exc.msg})") from None
        except ValueError as exc:  # an integer over Python's digit limit
            raise ValueError(f"line {n}: not JSON ({exc})") from None
        text = d.get("prompt", d.get("text")) if isinstance(d, dict) else None
        label = d.get("tier", d.get("label")) if isinstance(d, dict) else None
        if not isinstance(text, str) or not isinstance(label, str) or not label:
            raise ValueError(f'line {n}: need {{"prompt": str, "tier": str}} (optional "max_tokens")')
        mt = d.get("max_tokens")
        rows.append({"prompt": text, "tier": label, "max_tokens": int(mt) if mt is not None else None})
    return rows


def train(
    rows: list[dict[str, Any]],
    embed_batch: Callable[[list[str]], np.ndarray],
    embedding_model: str,
    c: float = 4.0,
    markers: Sequence[str] = DEFAULT_MARKERS,
) -> LinearClassifier:
    """Fit logistic regression; reports train accuracy and (when there is enough data) 5-fold CV accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    labels = sorted({r["tier"] for r in rows})
    if len(labels) < 2:
        raise ValueError(f"need examples of at least two tiers, got only {labels}")
    vecs = np.asarray(embed_batch([r["prompt"] for r in rows]), dtype=np.float32)
    x = np.stack(
        [
            np.concatenate([v, extra_features(r["prompt"], r["max_tokens"], markers)])
            for v, r in zip(vecs, rows, strict=True)
        ]
    )
    y = np.array([labels.index(r["tier"]) for r in rows])
    model = LogisticRegression(C=c, max_iter=2000)
    model.fit(x, y)
    metrics: dict[str, Any] = {"examples": len(rows), "train_accuracy": round(float(model.score(x, y)), 4)}
    counts = np.bincount(y)
    folds = int(min(5, counts.min()))
    if folds >= 2:
        cv = cross_val_score(LogisticRegression(C=c, max_iter=2000), x, y, cv=folds)
        metrics["cv_accuracy"] = round(float(cv.mean()), 4)
        metrics["cv_folds"] = folds
    metrics["per_class"] = {lab: int(n) for lab, n in zip(labels, counts, strict=True)}
    return LinearClassifier(
        labels,
        np.asarray(model.coef_, dtype=np.float32),
        np.asarray(model.intercept_, dtype=np.float32),
        embedding_model,
        list(markers),
        metrics,
    )
