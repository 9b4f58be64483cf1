"""Token selection with TensorRT-LLM semantics.

Greedy unless ``top_k > 1`` or ``top_p > 0`` (``top_k == 1`` is greedy; ``temperature == 0`` is
greedy too); the temperature scales logits only when sampling; top-k is applied before top-p;
seeded requests draw from their own ``torch.Generator`` so they are reproducible whatever else is
in the batch. Bad words are banned (a multi-token bad word bans its last token when the tail of the
sequence matches the rest), and the end id is suppressed until ``min_tokens`` tokens exist.

Penalties and the embedding bias follow TensorRT-LLM's executor (``SamplingConfig`` in
https://github.com/NVIDIA/TensorRT-LLM cpp/include/tensorrt_llm/executor/executor.h, applied in
cpp/tensorrt_llm/kernels/penaltyKernels.cu): over every token of the sequence so far, prompt included,
``repetition_penalty`` (> 0, 1 = off) divides a positive logit and multiplies a negative one,
``presence_penalty`` (0 = off) is subtracted once from a token that occurred, ``frequency_penalty``
(0 = off) is subtracted once per occurrence. They act after the temperature, before top-k/top-p; the
bias is added to the logits first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "INT32_MAX",
    "Penalties",
    "SamplingState",
    "UINT64_MAX",
    "banned_tokens",
    "check_penalties",
    "check_sampling",
    "ends_with_any",
    "is_greedy",
]

INT32_MAX = 2**31 - 1
UINT64_MAX = 2**64 - 1


def check_sampling(
    top_k, top_p, temperature, seed=None, min_tokens=0
) -> tuple[int, float, float, int | None, int]:
    """Normalized (top_k, top_p, temperature, seed, min_tokens); ValueError naming the first bad one.

    Every value must be finite and in range: one NaN temperature would otherwise turn the softmax of
    its row into NaNs inside the shared batch step. ``top_p == 0`` means "off" (TensorRT-LLM's default).
    """

    def integer(name: str, v, lo: int, hi: int) -> int:
        if isinstance(v, float) and not v.is_integer():
            raise ValueError(f"{name} must be an integer, got {v}")
        try:
            i = int(v)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{name} must be an integer, got {v!r}") from None
        if not lo <= i <= hi:
            raise ValueError(f"{name} must be between {lo} and {hi}, got {i}")
        return i

    def real(name: str, v, lo: float, hi: float) -> float:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {v!r}") from None
        if not math.isfinite(f) or not lo <= f <= hi:
            raise ValueError(f"{name} must be a finite number between {lo:g} and {hi:g}, got {f}")
        return f

    top_k = integer("top_k", 0 if top_k is None else top_k, 0, INT32_MAX)
    top_p = real("top_p", 0.0 if top_p is None else top_p, 0.0, 1.0)
    temperature = real("temperature", 1.0 if temperature is None else temperature, 0.0, 1e6)
    seed = None if seed is None else integer("seed", seed, 0, UINT64_MAX)
    min_tokens = integer("min_tokens", min_tokens or 0, 0, INT32_MAX)
    return top_k, top_p, temperature, seed, min_tokens


class Penalties:
    """Per-request penalties with the token counts of its sequence (prompt + generated)."""

    __slots__ = ("repetition", "presence", "frequency", "counts")

    def __init__(
        self,
        repetition: float = 1.0,
        presence: float = 0.0,
        frequency: float = 0.0,
        tokens: Sequence[int] = (),
    ) -> None:
        self.repetition = float(repetition)
        self.presence = float(presence)
        self.frequency = float(frequency)
        self.counts: dict[int, int] = {}
        for t in tokens:
            self.add(t)

    @property
    def active(self) -> bool:
        return self.repetition != 1.0 or self.presence != 0.0 or self.frequency != 0.0

    def add(self, token: int) -> None:
        self.counts[int(token)] = self.counts.get(int(token), 0) + 1

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """A penalized copy of ``logits`` [vocab]."""
        if not self.active or not self.counts:
            return logits
        vocab = logits.shape[-1]
        items = [(t, n) for t, n in self.counts.items() if 0 <= t < vocab]
        if not items:
            return logits
        idx = torch.tensor([t for t, _ in items], dtype=torch.long)
        cnt = torch.tensor([n for _, n in items], dtype=logits.dtype)
        out = logits.clone()
        sel = out[idx]
        if self.repetition != 1.0:
            sel = torch.where(sel > 0, sel / self.repetition, sel * self.repetition)
        sel = sel - self.presence - self.frequency * cnt
        out[idx] = sel
        return out


def check_penalties(repetition, presence, frequency) -> tuple[float, float, float]:
    """Normalized (repetition, presence, frequency); ValueError naming the first bad one."""
    out = []
    for name, v, default in (
        ("repetition_penalty", repetition, 1.0),
        ("presence_penalty", presence, 0.0),
        ("frequency_penalty", frequency, 0.0),
    ):
        try:
            f = float(default if v is None else v)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {v!r}") from None
        if not math.isfinite(f):
            raise ValueError(f"{name} must be finite, got {f}")
        out.append(f)
    if out[0] <= 0.0:
        raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {out[0]}")
    return out[0], out[1], out[2]


def is_greedy(top_k: int, top_p: float, temperature: float) -> bool:
    """Whether these parameters select the arg-max token (TensorRT-LLM's rule)."""
    return (top_k <= 1 and top_p <= 0.0) or temperature == 0.0


def banned_tokens(sequence: Sequence[int], bad_words: Sequence[Sequence[int]]) -> list[int]:
    """Token ids that would complete one of ``bad_words`` after ``sequence``."""
    out: list[int] = []
    for word in bad_words:
        n = len(word)
        if n == 1:
            out.append(word[0])
        elif len(sequence) >= n - 1 and list(sequence[len(sequence) - (n - 1) :]) == list(word[:-1]):
            out.append(word[-1])
    return out


def ends_with_any(tail: Sequence[int], words: Sequence[Sequence[int]]) -> bool:
    """Whether ``tail`` ends with one of ``words``."""
    for w in words:
        n = len(w)
        if n and len(tail) >= n and list(tail[len(tail) - n :]) == list(w):
            return True
    return False


class SamplingState:
    """Per-request sampler: parameters plus the request's own random generator."""

    def __init__(self, top_k: int, top_p: float, temperature: float, seed: int | None) -> None:
        self.top_k = int(top_k)
        self.top_p = float(top_p)
        self.temperature = float(temperature)
        self.greedy = is_greedy(self.top_k, self.top_p, self.temperature)
        self.generator: torch.Generator | None = None
        if not self.greedy:
            self.generator = torch.Generator()
            if seed is None:
                self.generator.seed()  # nondeterministic
            else:
                self.generator.manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)

    def select(
        self,
        logits: torch.Tensor,
        banned: Sequence[int] = (),
        penalties: Penalties | None = None,
        bias: torch.Tensor | None = None,
    ) -> tuple[int, float]:
        """Pick one token from ``logits`` ``[vocab]`` (float32); returns (token, its log-prob).

        The log-prob is that of the distribution the token was drawn from (after bias, temperature and
        penalties, before top-k/top-p truncation), as the engine reports in ``output_log_probs``.
        """
        if bias is not None:
            logits = logits + bias
        if penalties is not None and penalties.active:
            if not self.greedy:  # TensorRT-LLM applies the temperature before the penalties
                logits = penalties.apply(logits / max(self.temperature, 1e-6)) * max(self.temperature, 1e-6)
            else:
                logits = penalties.apply(logits)
        if banned:
            logits = logits.clone()
            idx = [t for t in banned if 0 <= t < logits.shape[-1]]
            if idx:
                logits[idx] = float("-inf")
        if self.greedy:
            token = int(torch.argmax(logits))
            logp = torch.log_softmax(logits, dim=-1)[token]
            return token, float(logp)
        scaled = logits / max(self.temperature, 1e-6)
        logprobs = torch.log_softmax(scaled, dim=-1)
        work = scaled
        if self.top_k > 1 and self.top_k < work.shape[-1]:
            kth = torch.topk(work, self.top_k).values[-1]
            work = work.masked_fill(work < kth, float("-inf"))
        if 0.0 < self.top_p < 1.0:
            sorted_logits, order = torch.sort(work, descending=True)
            probs = torch.softmax(sorted_logits, dim=-1)
            cum = torch.cumsum(probs, dim=-1)
            drop = (cum - probs) >= self.top_p  # keep the smallest prefix reaching top_p
            drop[0] = False
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
            work = torch.full_like(work, float("-inf")).scatter(0, order, sorted_logits)
        probs = torch.softmax(work, dim=-1)
        token = int(torch.multinomial(probs, 1, generator=self.generator))
        return token, float(logprobs[token])
