"""The per-request record every metric is computed from (Locust's own stats round into buckets)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tritonforge.loadtest.protocols import Outcome


@dataclass
class RequestRecord:
    """One request as the load generator saw it. Times are seconds; `start` is epoch seconds."""

    id: str
    level: str = ""  # e.g. "c=4" (4 users) or "r=2" (2 requests/s)
    repeat: int = 0
    process: str = ""  # load-generator process (host:pid)
    user: int = 0
    protocol: str = ""
    model: str = ""
    item: int = -1  # workload item index
    kind: str = ""  # synthetic, prefix, repeat, paraphrase, trace
    warmup: bool = False
    start: float = 0.0
    scheduled: float | None = None  # open loop: when the request was due (epoch seconds)
    ttft_s: float | None = None
    e2e_s: float | None = None
    input_tokens: int | None = None
    requested_tokens: int | None = None
    output_tokens_server: int | None = None  # num_output_tokens as reported by the server
    output_tokens_retok: int | None = None  # re-tokenised text (filled in after the run)
    chunks: int = 0
    ok: bool = True
    error_type: str = ""
    error: str = ""
    tier: str | None = None
    cache_status: str | None = None
    text: str = ""  # kept in the JSONL, not in requests.csv

    @property
    def end(self) -> float:
        return self.start + (self.e2e_s or 0.0)

    @property
    def output_tokens(self) -> int | None:
        """Server count when reported, else the re-tokenised count."""
        return (
            self.output_tokens_server if self.output_tokens_server is not None else self.output_tokens_retok
        )

    @property
    def itl_s(self) -> float | None:
        """(E2E - TTFT) / (output tokens - 1), streaming requests with > 1 token only."""
        n = self.output_tokens
        if not self.ok or self.ttft_s is None or self.e2e_s is None or n is None or n < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (n - 1)

    @classmethod
    def from_outcome(
        cls,
        out: Outcome,
        item: dict[str, Any],
        *,
        id: str,
        level: str,
        process: str,
        user: int,
        protocol: str,
        model: str,
        warmup: bool,
        repeat: int = 0,
        scheduled: float | None = None,
    ) -> RequestRecord:
        """The record of one sent workload `item` and what came back (`out`)."""
        return cls(
            id=id,
            level=level,
            repeat=repeat,
            process=process,
            user=user,
            protocol=protocol,
            model=model,
            item=item.get("index", -1),
            kind=item.get("kind", ""),
            warmup=warmup,
            start=out.start,
            scheduled=scheduled,
            ttft_s=out.ttft_s,
            e2e_s=out.e2e_s,
            input_tokens=item.get("input_tokens"),
            requested_tokens=item.get("max_tokens"),
            output_tokens_server=out.server_tokens,
            chunks=out.chunks,
            ok=out.ok,
            error_type=out.error_type,
            error=out.error,
            tier=out.tier,
            cache_status=out.cache_status,
            text=out.text,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RequestRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


CSV_FIELDS = [f.name for f in fields(RequestRecord) if f.name != "text"]
CSV_EXTRA = ["end", "itl_s", "output_tokens"]


def append_jsonl(records: Iterable[RequestRecord], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")


def read_jsonl(paths: Iterable[Path]) -> list[RequestRecord]:
    out: list[RequestRecord] = []
    for p in paths:
        with Path(p).open(encoding="utf-8") as fh:
            out.extend(RequestRecord.from_dict(json.loads(line)) for line in fh if line.strip())
    return out


def write_csv(records: Iterable[RequestRecord], path: Path) -> None:
    """requests.csv: one row per request (warm-up rows included, flagged), sorted by start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_FIELDS + CSV_EXTRA)
        for r in sorted(records, key=lambda r: (r.level, r.repeat, r.start)):
            row = asdict(r)
            values = [_cell(row[k]) for k in CSV_FIELDS] + [
                _cell(r.end),
                _cell(r.itl_s),
                _cell(r.output_tokens),
            ]
            w.writerow(values)


def read_csv(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6f}"
    return v
