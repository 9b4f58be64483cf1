"""Semantic-cache verification: a cached answer is served for a similar prompt only when the two prompts
agree on everything an embedding is blind to.

Sentence embeddings put "convert Celsius to Fahrenheit" and its reverse at cosine 0.994, and
"12 * 13" next to "12 * 14". A candidate that passed the similarity threshold must also pass
`verify(query, cached)`, which compares features extracted from both prompts:

- numbers, in order (number words and full-width digits count as digits; ``2⁸`` is ``2 ^ 8``);
- operators, in order (``+ - * / % ^ = < >``, brackets, and the words plus / minus / times ...);
- negations (not, no, never, without, n't ...), by count;
- direction: words next to to / from / into / than / vs / arrows must appear in the same order, and
  the two sides of in / of / per / for ... must not swap;
- code identifiers (snake_case, camelCase, dotted names, calls) and quoted literals, case-sensitive;
- line structure and indentation, for prompts of several lines (code);
- every content word (names of languages, libraries, places, topics ...) after lower-casing, plural
  stripping and a small fold of interchangeable request words (tell / give / list ...).

It is deliberately strict: a paraphrase that swaps a content word for a synonym outside the fold is
a miss (the model answers it), never a wrong answer. `benchmarks/data/near_duplicates.jsonl` measures
both sides.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

_SUPER = dict(zip("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789", strict=True))
_SUB = dict(zip("₀₁₂₃₄₅₆₇₈₉", "0123456789", strict=True))

_TOKEN = re.compile(
    r"""(?P<num>\d+(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:st|nd|rd|th)?)
      |(?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?:'[a-z]+)?)
      |(?P<op>==|!=|<=|>=|->|=>|\*\*|//|[-+*/%^=<>×÷→←⇒()\[\]{}])""",
    re.VERBOSE,
)

_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
_NUMBER_WORDS.update(
    {
        "thirty": "30",
        "forty": "40",
        "fifty": "50",
        "sixty": "60",
        "seventy": "70",
        "eighty": "80",
        "ninety": "90",
        "hundred": "100",
        "thousand": "1000",
        "million": "1000000",
        "billion": "1000000000",
        "dozen": "12",
    }
)
_ORDINALS = {
    w: str(i + 1)
    for i, w in enumerate("first second third fourth fifth sixth seventh eighth ninth tenth".split())
}

_OP_WORDS = {
    "plus": "+",
    "minus": "-",
    "times": "*",
    "multiplied": "*",
    "divided": "/",
    "modulo": "%",
    "mod": "%",
    "power": "^",
    "equals": "=",
    "×": "*",
    "÷": "/",
    "**": "^",
    "→": "->",
    "⇒": "->",
    "=>": "->",
    "←": "<-",
}
_NEGATIONS = {
    "not",
    "no",
    "never",
    "none",
    "nothing",
    "nobody",
    "nowhere",
    "neither",
    "nor",
    "without",
    "cannot",
    "n't",
}
_DIRECTION = {"to", "into", "from", "than", "vs", "versus", "->", "<-", "towards", "onto"}
# Relations whose two sides must not swap ("ounces in a pound" vs "pounds in an ounce"); unlike the
# words above, the rest of the sentence may be reordered around them ("a string in Python").
_RELATION = {
    "in",
    "of",
    "per",
    "for",
    "by",
    "on",
    "at",
    "with",
    "over",
    "under",
    "within",
    "inside",
    "outside",
}
_STOP = set(
    """a an the is are was were be been being am of in on at for with about by as and also please kindly
    me i my we our us you your it its this that these those there here do does did doing can could would
    should will shall may might must have has had just really very so if then let lets hey hi thanks thank
    s 's 're 've 'll 'd 'm like help want need using use got""".split()  # "has a spider got" = "has"
)
# Words that frame a request ("what is X", "tell me X", "explain X") without changing what is asked.
# Not "list" or "name": nouns too ("convert a list to a tuple").
_FRAME = {"what", "which", "tell", "give", "show", "provide", "share", "explain", "describe", "clarify"}
# Interchangeable words for a request (a conservative list: a fold too wide gives wrong answers).
_FOLD = {
    "suggest": "recommend",
    "write": "write",
    "compose": "write",
    "create": "write",
    "generate": "write",
    "produce": "write",
    "draft": "write",
    "dict": "dictionary",
    "summarize": "summar",
    "summarise": "summar",
    "summary": "summar",
    "short": "short",
    "brief": "short",
    "concise": "short",
    "main": "main",
    "major": "main",
    "key": "main",
    "primary": "main",
    "biggest": "main",
    "principal": "main",
    "kid": "child",
    "children": "child",
    "kids": "child",
    "quickly": "quick",
    "fast": "quick",
    "method": "way",
    "approach": "way",
    "simply": "simple",
    "easy": "simple",
    "fact": "fact",
    "facts": "fact",
    "sentence": "sentence",
}
_CONTRACTIONS = {"can't": "can not", "won't": "will not", "shan't": "shall not", "ain't": "is not"}
_CAMEL = re.compile(r"^[a-z]+[A-Z]")  # getUser, useEffect (not JavaScript: a name, compared as a word)


@dataclass(frozen=True)
class Features:
    numbers: tuple[str, ...]
    operators: tuple[str, ...]
    negations: int
    identifiers: frozenset[str]
    literals: frozenset[str]
    content: frozenset[str]
    order: tuple[str, ...]  # content words in order of first appearance
    anchors: frozenset[str]  # content words next to a direction word
    pairs: frozenset[tuple[str, str]]  # (word before, word after) each direction or relation word
    layout: tuple[int, ...]  # indentation of each non-empty line, for text of several lines (code)


def _prepare(text: str) -> str:
    out, prev = [], ""
    for ch in text:
        if ch in _SUPER:
            out.append(("" if prev in _SUPER else " ^ ") + _SUPER[ch])
        elif ch in _SUB:
            out.append(("" if prev in _SUB else " _ ") + _SUB[ch])
        else:
            out.append(ch)
        prev = ch
    text = unicodedata.normalize("NFKC", "".join(out)).replace("’", "'")
    text = re.sub(r"\b([CcFf])#", r" \1sharp ", text).replace("++", "plusplus ")  # C# / F# / C++ are names
    for k, v in _CONTRACTIONS.items():
        text = re.sub(k, v, text, flags=re.IGNORECASE)
    return re.sub(r"n't\b", " n't", text)


def _lemma(w: str) -> str:
    w = _FOLD.get(w, w)
    if len(w) > 3 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 3 and w.endswith("es") and w[-3] in "sxz":
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    return _FOLD.get(w, w)


def _is_hyphen_joiner(text: str, start: int) -> bool:
    """A '-' between letters ("10-year-old", "well-known") joins words; elsewhere it is minus."""
    before = text[start - 1] if start > 0 else " "
    after = text[start + 1] if start + 1 < len(text) else " "
    return before.isalpha() or after.isalpha()


@lru_cache(maxsize=4096)  # a cached prompt is checked against many queries
def features(text: str) -> Features:
    """The facts about `text` that two prompts must share for one cached answer to serve both."""
    raw = _prepare(text)
    lines = [ln for ln in raw.splitlines() if ln.strip()]
    layout = tuple(len(ln) - len(ln.lstrip()) for ln in lines) if len(lines) > 1 else ()
    literals = frozenset(m.group(1) or m.group(2) for m in re.finditer(r'"([^"]*)"|`([^`]*)`', raw))
    numbers: list[str] = []
    operators: list[str] = []
    identifiers: set[str] = set()
    seq: list[tuple[str, str]] = []  # (kind, value): kind content | dir
    negations = 0
    for m in _TOKEN.finditer(raw):
        if m.group("num"):
            v = m.group("num").replace(",", "")
            v = re.sub(r"(st|nd|rd|th)$", "", v)
            numbers.append(v.rstrip("0").rstrip(".") if "." in v else v)
            continue
        if m.group("op"):
            op = m.group("op")
            if op == "-" and _is_hyphen_joiner(raw, m.start()):
                continue
            op = _OP_WORDS.get(op, op)
            operators.append(op)
            if op in _DIRECTION:
                seq.append(("dir", op))
            continue
        word = m.group("word")
        if "_" in word.strip("_") or "." in word or _CAMEL.search(word) or raw[m.end() : m.end() + 1] == "(":
            identifiers.add(word)
        low = word.lower()
        parts = [low]
        if "'" in low and low not in _NEGATIONS:
            base, tail = low.split("'", 1)
            parts = [base, "'" + tail]
        for w in parts:
            if w in _NEGATIONS:
                negations += 1
            elif w in _NUMBER_WORDS:
                numbers.append(_NUMBER_WORDS[w])
            elif w in _ORDINALS:
                numbers.append(_ORDINALS[w])
            elif w in _OP_WORDS:
                operators.append(_OP_WORDS[w])
            elif w == "x" and numbers and operators[-1:] != ["*"]:
                operators.append("*")  # "12 x 13"
            elif w in _DIRECTION:
                seq.append(("dir", w))
            elif w in _RELATION:
                seq.append(("rel", w))
            elif w not in _STOP and w not in _FRAME:
                seq.append(("content", _lemma(w)))
    content = [v for k, v in seq if k == "content"]
    anchors: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    for i, (k, _) in enumerate(seq):
        if k == "content":
            continue
        before = next((v for kk, v in reversed(seq[:i]) if kk == "content"), None)
        after = next((v for kk, v in seq[i + 1 :] if kk == "content"), None)
        if before is not None and after is not None:
            pairs.add((before, after))
        if k == "dir":
            anchors.update(w for w in (before, after) if w is not None)
    return Features(
        numbers=tuple(numbers),
        operators=tuple(operators),
        negations=negations,
        identifiers=frozenset(identifiers),
        literals=literals,
        content=frozenset(content),
        order=tuple(dict.fromkeys(content)),
        anchors=frozenset(anchors),
        pairs=frozenset(pairs),
        layout=layout,
    )


def mismatch(a: Features, b: Features) -> str | None:
    """Why the two prompts may not share an answer (a short reason), or None when they may."""
    if a.numbers != b.numbers:
        return "numbers"
    if a.operators != b.operators:
        return "operators"
    if a.negations != b.negations:
        return "negation"
    if a.identifiers != b.identifiers or a.literals != b.literals:
        return "identifiers"
    if a.content != b.content:
        return "words"
    if a.layout != b.layout:
        return "layout"
    if any((y, x) in b.pairs for x, y in a.pairs if x != y):
        return "direction"
    anchors = sorted((a.anchors | b.anchors) & a.content)
    pos_a = {w: i for i, w in enumerate(a.order)}
    pos_b = {w: i for i, w in enumerate(b.order)}
    for i, x in enumerate(anchors):
        for y in anchors[i + 1 :]:
            if (pos_a[x] < pos_a[y]) != (pos_b[x] < pos_b[y]):
                return "direction"
    return None


def verify(query: str, cached: str) -> str | None:
    """None when `cached`'s answer may serve `query`; else the reason it may not."""
    if query == cached:
        return None
    return mismatch(features(query), features(cached))
