"""Workloads: the prompts a load test sends, made up front and saved as JSONL.

Synthetic prompts have token lengths ~ N(isl, isl_std) in the model's tokenizer; outputs have a
fixed length (`min_tokens` = `max_tokens`) unless `fixed_output=false`. Options add shared-prefix
prompts (prefix reuse), exact repeats and paraphrases of earlier prompts at given rates (response
cache), or replace everything with a JSONL trace. Everything is drawn from one seeded RNG.
Synthetic prompts are distinct by construction (a head of words unique to each item), so only
the requested repeats re-send a prompt, and warm-up prompts are never measured prompts.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tritonforge.errors import UserError
from tritonforge.loadtest.corpus import CORPUS, PARAPHRASE_TEMPLATES, SYNONYMS
from tritonforge.loadtest.parsing import parse_kv_list

Item = dict[str, Any]


@dataclass
class WorkloadSpec:
    """What `--workload key=value,...` sets (see `describe()` for the keys)."""

    isl: int = 128
    isl_std: float = 0.0
    osl: int = 128
    osl_std: float = 0.0
    fixed_output: bool = True
    prefix: int = 0  # shared-prefix tokens in front of each prompt
    prefix_groups: int = 1  # distinct shared prefixes
    repeat: float = 0.0  # fraction of requests repeating an earlier prompt exactly
    paraphrase: float = 0.0  # fraction of requests paraphrasing an earlier prompt
    prompts: int = 1000  # items made (the load generator cycles through them)
    trace: str | None = None  # JSONL file instead of synthetic prompts
    inputs: dict[str, Any] = field(default_factory=dict)  # extra request inputs (temperature, top_k, ...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_INT_KEYS = {"isl", "osl", "prefix", "prefix_groups", "prompts"}
_FLOAT_KEYS = {"isl_std", "osl_std", "repeat", "paraphrase"}
_INPUT_KEYS = {"temperature": float, "top_p": float, "top_k": int, "seed": int}
_ALIASES = {"input_tokens": "isl", "output_tokens": "osl", "shared_prefix": "prefix", "repeats": "repeat"}


def describe() -> str:
    return (
        "isl, isl_std (input tokens ~ N), osl, osl_std (output tokens), fixed_output (true: min_tokens = "
        "max_tokens), prefix, prefix_groups (shared prefixes), repeat, paraphrase (rates 0-1), prompts "
        "(items made), trace (JSONL file), temperature, top_p, top_k, seed (request inputs)"
    )


def parse_workload(text: str | None) -> WorkloadSpec:
    """`isl=256,isl_std=32,osl=64,repeat=0.2` -> WorkloadSpec; a bare path means `trace=PATH`."""
    spec = WorkloadSpec()
    if not text:
        return spec
    if "=" not in text:
        text = f"trace={text}"
    for key, value in parse_kv_list(text, "--workload").items():
        key = _ALIASES.get(key, key)
        try:
            if key in _INT_KEYS:
                setattr(spec, key, int(value))
            elif key in _FLOAT_KEYS:
                setattr(spec, key, float(value))
            elif key == "fixed_output":
                spec.fixed_output = value.lower() in ("1", "true", "yes", "on")
            elif key == "trace":
                spec.trace = value
            elif key in _INPUT_KEYS:
                spec.inputs[key] = _INPUT_KEYS[key](value)
            else:
                raise UserError(f"invalid --workload key {key!r}; known keys: {describe()}")
        except ValueError:
            raise UserError(f"invalid --workload value {key}={value!r}: not a number") from None
    _check(spec)
    return spec


def _check(spec: WorkloadSpec) -> None:
    if spec.isl < 1 or spec.osl < 1:
        raise UserError("invalid --workload: isl and osl must be >= 1")
    if spec.isl_std < 0 or spec.osl_std < 0 or spec.prefix < 0:
        raise UserError("invalid --workload: isl_std, osl_std and prefix must be >= 0")
    if spec.prefix_groups < 1 or spec.prompts < 1:
        raise UserError("invalid --workload: prefix_groups and prompts must be >= 1")
    if not (0 <= spec.repeat <= 1 and 0 <= spec.paraphrase <= 1 and spec.repeat + spec.paraphrase <= 1):
        raise UserError(
            "invalid --workload: repeat and paraphrase are rates in [0, 1] with repeat + paraphrase <= 1"
        )


# ------------------------------------------------------------------------------------- tokenizer


class TokenizerAdapter:
    """A Hugging Face tokenizer (tokenizer.json via `tokenizers`, else transformers), no special tokens."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name
        self._fast: Any = None  # tokenizers.Tokenizer
        self._hf: Any = None  # transformers tokenizer, when there is no tokenizer.json
        file = path / "tokenizer.json" if path.is_dir() else path
        if file.is_file() and file.suffix == ".json":
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_file(str(file))
        elif path.is_dir() and not any(path.glob("tokenizer*")) and not any(path.glob("*vocab*")):
            raise UserError(
                f"no tokenizer in {str(path)!r} (no tokenizer.json); pass a Hugging Face tokenizer directory"
            )
        else:
            try:
                from transformers import AutoTokenizer

                self._hf = AutoTokenizer.from_pretrained(str(path))
            except Exception as exc:  # noqa: BLE001 - any load failure is the user's path
                raise UserError(
                    f"cannot load a tokenizer from {str(path)!r} ({type(exc).__name__}); pass a Hugging Face tokenizer directory"
                ) from None

    def encode(self, text: str) -> list[int]:
        if self._fast is not None:
            return list(self._fast.encode(text, add_special_tokens=False).ids)
        return list(self._hf.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        if self._fast is not None:
            return self._fast.decode(ids, skip_special_tokens=True)
        return self._hf.decode(ids, skip_special_tokens=True)

    def count(self, texts: list[str]) -> list[int]:
        if self._fast is not None:
            return [len(e.ids) for e in self._fast.encode_batch(texts, add_special_tokens=False)]
        return [len(self.encode(t)) for t in texts]


def load_tokenizer(spec: str | None) -> TokenizerAdapter:
    """`demo`/`tiny` (tritonforge's embedded tokenizers), a tokenizer directory, or a tokenizer.json."""
    spec = spec or "demo"
    path = Path(spec).expanduser()
    if path.exists():
        return TokenizerAdapter(path, str(path))
    try:
        from tritonforge.builder import demo_model
    except ImportError:
        raise UserError(
            f"tokenizer {spec!r} is not a directory and tritonforge's demo models are unavailable; pass --tokenizer DIR"
        ) from None
    if spec not in demo_model.MODEL_NAMES:
        raise UserError(
            f"tokenizer {spec!r} not found: pass a Hugging Face tokenizer directory or one of {', '.join(demo_model.MODEL_NAMES)}"
        )
    return TokenizerAdapter(demo_model.materialize(spec), f"builtin:{spec}")


# -------------------------------------------------------------------------------------- generator


class _TextMaker:
    """Prompts of an exact token length: a head of words unique to the item, then corpus text.

    The head spells a distinct number in words (mixed radix over the corpus's words), so no two
    prompts of one workload are equal and no two share their first KV-cache block: synthetic
    prompts are unique by construction, not by luck of where in the corpus they were cut. The
    head's first word comes from one half of the word list for measured prompts (`namespace` 0)
    and from the other half for warm-up prompts (1), so warm-up prompts never equal measured ones.
    """

    def __init__(self, tok: TokenizerAdapter) -> None:
        self.tok = tok
        self.ids = tok.encode(CORPUS.replace("\n", " "))
        words = sorted(set(re.findall(r"[a-z]+", CORPUS.lower())))
        single = [w for w in words if len(tok.encode(f" {w}")) == 1]
        self.words = (
            single if len(single) >= 64 else words
        )  # one token per head word where the vocabulary allows

    def heads(self, count: int, rng: random.Random, namespace: int = 0) -> list[str]:
        """`count` distinct heads (distinct numbers drawn without replacement, spelled in words)."""
        first = self.words[namespace % 2 :: 2]
        digits, capacity = 1, len(first)
        while capacity < 4 * count:  # room to spare, so the drawn numbers spread over the first word
            digits, capacity = digits + 1, capacity * len(self.words)
        out = []
        for number in rng.sample(range(capacity), count):
            number, d0 = divmod(number, len(first))
            spelled = [first[d0]]
            for _ in range(digits - 1):
                number, d = divmod(number, len(self.words))
                spelled.append(self.words[d])
            out.append(" ".join(spelled).capitalize())
        return out

    def make(self, n: int, rng: random.Random, head: str = "") -> tuple[str, int]:
        start = rng.randrange(len(self.ids))
        floor = 0 if head else 1
        body = max(floor, n - (len(self.tok.encode(head)) if head else 0))
        ids = [self.ids[(start + k) % len(self.ids)] for k in range(body)]
        text, count = "", 0
        for _ in range(6):  # re-tokenising may merge or split at the edges; converge on n
            text = " ".join(t for t in (head, self.tok.decode(ids).strip()) if t)
            count = len(self.tok.encode(text))
            if count == n:
                break
            if count > n:
                if len(ids) <= floor:
                    break  # the head alone is longer than n: the prompt is the head
                ids = ids[: max(floor, len(ids) - (count - n))]
            else:
                ids = ids + [self.ids[(start + len(ids) + k) % len(self.ids)] for k in range(n - count)]
        return text, count


def _normal_int(rng: random.Random, mean: float, std: float) -> int:
    return max(1, round(rng.gauss(mean, std))) if std > 0 else max(1, int(mean))


def paraphrase(text: str, rng: random.Random) -> str:
    """A lexical paraphrase: synonym swaps plus a wrapping template (never identical to `text`)."""
    both = {**SYNONYMS, **{v: k for k, v in SYNONYMS.items()}}

    def swap(m: re.Match[str]) -> str:
        word = m.group(0)
        repl = both.get(word.lower())
        return repl if repl and rng.random() < 0.7 else word

    out = re.sub(r"[A-Za-z]+", swap, text)
    template = rng.choice(PARAPHRASE_TEMPLATES[1:] if out == text else PARAPHRASE_TEMPLATES)
    return template.format(p=out)


def generate(spec: WorkloadSpec, tok: TokenizerAdapter | None, seed: int, namespace: int = 0) -> list[Item]:
    """The workload's items (prompt, max_tokens, min_tokens, input_tokens, kind, source, inputs).

    Synthetic prompts are distinct (see `_TextMaker`); only `repeat` items repeat a prompt.
    `namespace` 1 makes warm-up prompts, disjoint from the measured ones (namespace 0).
    """
    if spec.trace:
        return read_trace(spec.trace, spec, tok)
    if tok is None:
        raise UserError("synthetic prompts need a tokenizer; pass --tokenizer DIR (or demo)")
    rng = random.Random(seed)
    maker = _TextMaker(tok)
    prefixes = [maker.make(spec.prefix, rng)[0] for _ in range(spec.prefix_groups)] if spec.prefix else []
    heads = iter(maker.heads(spec.prompts, rng, namespace))
    items: list[Item] = []
    originals: list[int] = []
    seen: set[str] = set()
    for i in range(spec.prompts):
        osl = _normal_int(rng, spec.osl, spec.osl_std)
        base = {
            "index": i,
            "max_tokens": osl,
            "min_tokens": osl if spec.fixed_output else None,
            "inputs": dict(spec.inputs),
        }
        u = rng.random()
        if originals and u < spec.repeat:
            src = items[rng.choice(originals)]
            items.append(
                {
                    **base,
                    "prompt": src["prompt"],
                    "input_tokens": src["input_tokens"],
                    "kind": "repeat",
                    "source": src["index"],
                    "max_tokens": src["max_tokens"],
                    "min_tokens": src["min_tokens"],
                }
            )
            continue
        if originals and u < spec.repeat + spec.paraphrase:
            src = items[rng.choice(originals)]
            text = paraphrase(src["prompt"], rng)
            if text not in seen:  # a paraphrase that happens to equal another prompt becomes a fresh prompt
                seen.add(text)
                items.append(
                    {
                        **base,
                        "prompt": text,
                        "input_tokens": len(tok.encode(text)),
                        "kind": "paraphrase",
                        "source": src["index"],
                        "max_tokens": src["max_tokens"],
                        "min_tokens": src["min_tokens"],
                    }
                )
                continue
        text, count = maker.make(_normal_int(rng, spec.isl, spec.isl_std), rng, next(heads))
        kind = "synthetic"
        if prefixes:
            group = rng.randrange(len(prefixes))
            text = f"{prefixes[group]} {text}"
            count = len(tok.encode(text))
            kind, base["prefix_group"] = "prefix", group
        seen.add(text)
        items.append({**base, "prompt": text, "input_tokens": count, "kind": kind, "source": None})
        originals.append(i)
    check_distinct(items)
    return items


def check_distinct(items: list[Item]) -> None:
    """Raise when two items that are not deliberate repeats carry the same prompt."""
    prompts = [it["prompt"] for it in items if it["kind"] != "repeat"]
    dupes = len(prompts) - len(set(prompts))
    if dupes:
        raise UserError(
            f"the workload made {dupes} duplicate prompts where none were asked for; raise --workload isl "
            "(prompts too short to be distinct) or lower prompts"
        )


def warmup_split(
    spec: WorkloadSpec, tok: TokenizerAdapter | None, seed: int, count: int, items: list[Item]
) -> tuple[list[Item], list[Item]]:
    """(warm-up items, measured items), the warm-up prompts disjoint from the measured ones.

    Synthetic workloads warm up with prompts of the same shape from the warm-up namespace. A
    trace warms up with its first `count` requests, which are then not measured; a trace too
    short for that warms up with synthetic prompts of its mean lengths (or not at all without a
    tokenizer). Warm-up prompts equal to a measured prompt are dropped.
    """
    if count <= 0:
        return [], items
    if not spec.trace:
        warm_spec = WorkloadSpec(**{**spec.to_dict(), "prompts": count, "repeat": 0.0, "paraphrase": 0.0})
        warm = generate(warm_spec, tok, seed + 7919, namespace=1)
    elif len(items) > count:
        warm, items = items[:count], items[count:]
    elif tok is not None:
        isl = [it["input_tokens"] for it in items if it.get("input_tokens")] or [WorkloadSpec.isl]
        osl = [it["max_tokens"] for it in items]
        warm_spec = WorkloadSpec(
            isl=max(1, round(sum(isl) / len(isl))),
            osl=max(1, round(sum(osl) / len(osl))),
            prompts=count,
            inputs=dict(spec.inputs),
        )
        warm = generate(warm_spec, tok, seed + 7919, namespace=1)
    else:
        return [], items
    measured = {it["prompt"] for it in items}
    return [it for it in warm if it["prompt"] not in measured], items


def read_trace(path: str, spec: WorkloadSpec, tok: TokenizerAdapter | None) -> list[Item]:
    """A JSONL trace: one object per line with `prompt` (or text_input/text) and `max_tokens`
    (or output_tokens/osl); optional `min_tokens` and extra request inputs under `inputs`."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"trace file {str(p)!r} not found; pass a JSONL file with one request per line")
    items: list[Item] = []
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:  # JSONDecodeError, or e.g. an integer past Python's digit limit
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise UserError(f"malformed trace {p}: line {lineno} is not JSON ({why})") from None
            if not isinstance(obj, dict):
                raise UserError(f"malformed trace {p}: line {lineno} is not a JSON object")
            prompt = next((obj[k] for k in ("prompt", "text_input", "text") if k in obj), None)
            osl = next((obj[k] for k in ("max_tokens", "output_tokens", "osl") if k in obj), spec.osl)
            if not isinstance(prompt, str) or not prompt:
                raise UserError(f"malformed trace {p}: line {lineno} has no string `prompt`")
            if not isinstance(osl, int) or isinstance(osl, bool) or osl < 1:
                raise UserError(f"malformed trace {p}: line {lineno}: max_tokens must be a positive integer")
            min_tokens = obj.get("min_tokens", osl if spec.fixed_output else None)
            inputs = {**spec.inputs, **(obj.get("inputs") or {})}
            items.append(
                {
                    "index": len(items),
                    "prompt": prompt,
                    "max_tokens": osl,
                    "min_tokens": min_tokens,
                    "input_tokens": len(tok.encode(prompt)) if tok else None,
                    "kind": "trace",
                    "source": None,
                    "inputs": inputs,
                }
            )
    if not items:
        raise UserError(f"malformed trace {p}: no requests in it")
    return items


def count_input_tokens(items: list[Item], tok: TokenizerAdapter | None) -> None:
    """Fill `input_tokens` of items that lack it."""
    todo = [it for it in items if it.get("input_tokens") is None]
    if tok is not None and todo:
        for it, n in zip(todo, tok.count([it["prompt"] for it in todo]), strict=True):
            it["input_tokens"] = n


def save(items: list[Item], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for item in items:
            fh.write(json.dumps(item, ensure_ascii=False) + "\n")


def load(path: str | Path) -> list[Item]:
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def summarize(items: list[Item], warmup: list[Item] | None = None) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for it in items:
        kinds[it["kind"]] = kinds.get(it["kind"], 0) + 1
    isl = [it["input_tokens"] for it in items if it.get("input_tokens") is not None]
    osl = [it["max_tokens"] for it in items]
    return {
        "items": len(items),
        "kinds": kinds,
        "input_tokens_mean": round(sum(isl) / len(isl), 2) if isl else None,
        "input_tokens_min": min(isl) if isl else None,
        "input_tokens_max": max(isl) if isl else None,
        "output_tokens_mean": round(sum(osl) / len(osl), 2),
        "distinct_prompts": len({it["prompt"] for it in items}),
        "warmup_items": len(warmup or []),
    }
