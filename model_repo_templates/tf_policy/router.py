"""Router policies: pick the tier for a request (pure; no Triton)."""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .config import EntryConfig, HeuristicConfig
from .params import GenRequest

log = logging.getLogger(__name__)

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class TokenCounter:
    """Prompt tokens: the tier's tokenizer when `tokenizers` and tokenizer.json exist, else an estimate."""

    def __init__(self, tokenizer_dir: str | None = None) -> None:
        self._tok: Any = None
        if tokenizer_dir:
            path = os.path.join(tokenizer_dir, "tokenizer.json")
            try:
                from tokenizers import Tokenizer

                self._tok = Tokenizer.from_file(path)
            except Exception as exc:  # noqa: BLE001 - missing package or file: estimate instead
                log.warning("router: no tokenizer from %s (%s); estimating prompt tokens", path, exc)

    @property
    def exact(self) -> bool:
        return self._tok is not None

    def __call__(self, text: str) -> int:
        if self._tok is not None:
            return len(self._tok.encode(text, add_special_tokens=False).ids)
        return estimate_tokens(text)


def estimate_tokens(text: str) -> int:
    """~BPE token count without a tokenizer: the larger of pieces x 1.3 and characters / 4."""
    pieces = len(_WORD.findall(text))
    return max(int(math.ceil(pieces * 1.3)), int(math.ceil(len(text) / 4)))


@dataclass
class Decision:
    tier: str
    policy: str
    reason: str
    features: dict[str, Any] = field(default_factory=dict)


class Policy(Protocol):
    name: str

    def decide(self, req: GenRequest, prompt_tokens: int) -> Decision: ...


class StaticPolicy:
    """Always the default tier."""

    name = "static"

    def __init__(self, cfg: EntryConfig) -> None:
        self.tier = cfg.default_tier

    def decide(self, req: GenRequest, prompt_tokens: int) -> Decision:
        return Decision(self.tier, self.name, "static default tier", {"prompt_tokens": prompt_tokens})


def find_markers(text: str, markers: tuple[str, ...]) -> list[str]:
    low = text.lower()
    return [m for m in markers if m and m.lower() in low]


class HeuristicPolicy:
    """Large tier when the prompt is long, many tokens are asked for, or it looks like code/maths/reasoning."""

    name = "heuristic"

    def __init__(self, cfg: EntryConfig, rule: HeuristicConfig | None = None) -> None:
        self.rule = rule or cfg.router.heuristic
        self.small, self.large = cfg.small_tier, cfg.large_tier

    def decide(self, req: GenRequest, prompt_tokens: int) -> Decision:
        found = find_markers(req.text, self.rule.complex_markers)
        feats = {"prompt_tokens": prompt_tokens, "max_tokens": req.max_tokens, "markers": found}
        reasons = []
        if prompt_tokens > self.rule.max_prompt_tokens:
            reasons.append(f"prompt {prompt_tokens} tokens > {self.rule.max_prompt_tokens}")
        if req.max_tokens > self.rule.max_requested_tokens:
            reasons.append(f"max_tokens {req.max_tokens} > {self.rule.max_requested_tokens}")
        if found:
            reasons.append("complex markers " + ", ".join(repr(m) for m in found[:4]))
        if reasons:
            return Decision(self.large, self.name, "; ".join(reasons), feats)
        return Decision(self.small, self.name, "short and simple", feats)


class ClassifierPolicy:
    """A trained linear classifier over sentence embeddings; heuristic when it cannot run."""

    name = "classifier"

    def __init__(self, cfg: EntryConfig, classifier: Any, embed: Callable[[str], Any] | None) -> None:
        self.clf, self.embed = classifier, embed
        self.fallback = HeuristicPolicy(cfg)
        self.roles = {"small": cfg.small_tier, "large": cfg.large_tier}
        self.tiers = set(cfg.tier_names)

    def decide(self, req: GenRequest, prompt_tokens: int) -> Decision:
        if self.clf is None or self.embed is None:
            d = self.fallback.decide(req, prompt_tokens)
            d.reason = "classifier unavailable, heuristic: " + d.reason
            return d
        try:
            vec = self.embed(req.text)
            label, prob = self.clf.predict(req.text, vec, req.max_tokens)
        except Exception as exc:  # noqa: BLE001 - degrade to the heuristic
            log.warning("router: classifier failed (%s); using the heuristic", exc)
            d = self.fallback.decide(req, prompt_tokens)
            d.reason = f"classifier failed ({type(exc).__name__}), heuristic: " + d.reason
            return d
        tier = label if label in self.tiers else self.roles.get(label, self.roles["large"])
        feats = {
            "prompt_tokens": prompt_tokens,
            "max_tokens": req.max_tokens,
            "label": label,
            "p": round(prob, 4),
        }
        return Decision(tier, self.name, f"classifier says {label} (p={prob:.2f})", feats)


class Router:
    """Policy + per-tier limits + fallback order."""

    def __init__(self, cfg: EntryConfig, policy: Policy, counter: TokenCounter | None = None) -> None:
        self.cfg, self.policy = cfg, policy
        self.count = counter or TokenCounter(
            next((t.tokenizer_dir for t in cfg.tiers if t.tokenizer_dir), None)
        )

    def route(self, req: GenRequest) -> Decision:
        tokens = self.count(req.text)
        if req.tier is not None:
            return Decision(req.tier, "forced", "tier input", {"prompt_tokens": tokens})
        d = self.policy.decide(req, tokens)
        return self._fit(d, tokens, req.max_tokens)

    def _fit(self, d: Decision, tokens: int, max_tokens: int) -> Decision:
        """Move up (spec order) from a tier whose input/output limits the request exceeds."""
        names = list(self.cfg.tier_names)
        start = names.index(d.tier) if d.tier in names else 0
        for name in names[start:]:
            t = self.cfg.tier(name)
            if (t.max_input_len is None or tokens <= t.max_input_len) and (
                t.max_output_len is None or max_tokens <= t.max_output_len
            ):
                if name != d.tier:
                    d.reason += f"; {d.tier} limits exceeded, moved to {name}"
                    d.tier = name
                return d
        return d

    def chain(self, d: Decision) -> list[str]:
        """Tiers to try in order: the chosen one, then (with fallback) later tiers, then earlier ones."""
        if d.policy == "forced" or not self.cfg.router.fallback:
            return [d.tier]
        names = list(self.cfg.tier_names)
        i = names.index(d.tier)
        return [d.tier] + names[i + 1 :] + names[:i][::-1]


def build_router(
    cfg: EntryConfig, classifier: Any = None, embed: Callable[[str], Any] | None = None
) -> Router:
    """The router the config asks for (`static` when routing is disabled)."""
    policy: Policy
    if not cfg.router.enabled or len(cfg.tiers) == 1 or cfg.router.policy == "static":
        policy = StaticPolicy(cfg)
    elif cfg.router.policy == "classifier":
        policy = ClassifierPolicy(cfg, classifier, embed)
    else:
        policy = HeuristicPolicy(cfg)
    return Router(cfg, policy)
