"""RequestRecord.from_outcome: the one place a request's outcome and workload item become its record (the
warm-up threads and the Locust users both use it)."""

from __future__ import annotations

from tritonforge.loadtest.protocols import Outcome
from tritonforge.loadtest.records import RequestRecord


def test_record_takes_the_outcome_and_the_item() -> None:
    out = Outcome(
        start=100.5,
        ttft_s=0.1,
        e2e_s=0.9,
        chunks=7,
        server_tokens=6,
        text="hi",
        tier="small",
        cache_status="miss",
    )
    item = {"index": 3, "kind": "prefix", "input_tokens": 12, "max_tokens": 8, "prompt": "p"}
    rec = RequestRecord.from_outcome(
        out,
        item,
        id="h:1/4",
        level="r=2",
        process="h:1",
        user=5,
        protocol="http",
        model="m",
        warmup=False,
        repeat=1,
        scheduled=100.25,
    )
    assert rec == RequestRecord(
        id="h:1/4",
        level="r=2",
        repeat=1,
        process="h:1",
        user=5,
        protocol="http",
        model="m",
        item=3,
        kind="prefix",
        warmup=False,
        start=100.5,
        scheduled=100.25,
        ttft_s=0.1,
        e2e_s=0.9,
        input_tokens=12,
        requested_tokens=8,
        output_tokens_server=6,
        chunks=7,
        ok=True,
        text="hi",
        tier="small",
        cache_status="miss",
    )


def test_a_failed_request_and_a_bare_item() -> None:
    out = Outcome(start=1.0, e2e_s=0.2, error_type="http_503", error="overloaded")
    rec = RequestRecord.from_outcome(
        out,
        {},
        id="warmup/0",
        level="warmup",
        process="runner",
        user=0,
        protocol="grpc-stream",
        model="m",
        warmup=True,
    )
    assert not rec.ok and (rec.error_type, rec.error) == ("http_503", "overloaded")
    assert (rec.item, rec.kind, rec.input_tokens, rec.requested_tokens) == (-1, "", None, None)
    assert rec.warmup and rec.scheduled is None and rec.repeat == 0 and rec.output_tokens_server is None
