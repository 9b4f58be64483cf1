"""Locust users for Triton LLM endpoints: TTFT, ITL and E2E as custom Locust events.

Used by `tritonforge loadtest`, and directly, e.g.::

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --model ensemble \\
        --protocol http-stream --workload isl=128,osl=64 --tokenizer demo --headless -u 8 -t 60s

Closed loop: every user keeps one request in flight. Open loop (`--request-rate R`): each user
draws Poisson arrivals at R / users per second and sends each without waiting for the previous
one (at most `--max-inflight` at once per process). Each response-time event is fired under the
protocol as request type and `TTFT`, `ITL`, `E2E` as names (E2E's size column = output tokens);
failures are fired as `E2E` errors. With `--records-dir` every request is also written as a
JSONL record (exact values; Locust's own stats round into buckets), plus load-generator stats.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import socket
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.pool
from locust import User, events, task
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

from tritonforge.loadtest import protocols, workload
from tritonforge.loadtest.records import RequestRecord, append_jsonl

try:  # grpcio must cooperate with gevent before any channel exists
    import grpc.experimental.gevent as _grpc_gevent

    _grpc_gevent.init_gevent()
except ImportError:  # pragma: no cover - grpcio comes with tritonclient[grpc]
    pass

FLUSH_EVERY = 500
PROCESS = f"{socket.gethostname()}:{os.getpid()}"


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    g = parser.add_argument_group("tritonforge", "Triton LLM load test options")
    g.add_argument("--model", default="ensemble", help="Triton model to load (ensemble, llm, ...)")
    g.add_argument("--protocol", default="http-stream", choices=protocols.PROTOCOLS, help="request protocol")
    g.add_argument(
        "--grpc-url", default="", help="host:port of Triton's gRPC endpoint (default: --host with port+1)"
    )
    g.add_argument("--workload-file", default="", help="JSONL of requests made by `tritonforge loadtest`")
    g.add_argument("--workload", default="", help=f"synthetic workload key=value,... ({workload.describe()})")
    g.add_argument("--tokenizer", default="demo", help="tokenizer dir for synthetic prompts (or demo, tiny)")
    g.add_argument("--seed", type=int, default=0, help="workload seed")
    g.add_argument(
        "--request-rate", type=float, default=0.0, help="open loop: requests/s in total (0 = closed loop)"
    )
    g.add_argument(
        "--max-inflight", type=int, default=0, help="open loop: cap on requests in flight per process"
    )
    g.add_argument(
        "--item-offset",
        type=int,
        default=0,
        help="start at this workload item (tritonforge loadtest: where the previous run stopped)",
    )
    g.add_argument(
        "--warmup", type=int, default=0, help="first N requests per process are warm-up (excluded)"
    )
    g.add_argument(
        "--batch-dim",
        default="auto",
        choices=("auto", "0", "1"),
        help="gRPC: inputs get a batch dimension (auto: when the model's max_batch_size > 0)",
    )
    g.add_argument(
        "--request-timeout", type=float, default=300.0, help="seconds without a response before failing"
    )
    g.add_argument("--records-dir", default="", help="write per-request JSONL records and process stats here")
    g.add_argument("--level", default="", help="label stored in each record (set by tritonforge loadtest)")
    g.add_argument("--repeat-index", type=int, default=0, help="repeat number stored in each record")


class _Process:
    """State of this load-generating process (not the master)."""

    def __init__(self, environment: Any) -> None:
        opts = environment.parsed_options
        self.opts = opts
        self.protocol: str = opts.protocol
        if opts.workload_file:
            self.items = workload.load(opts.workload_file)
        else:
            spec = workload.parse_workload(opts.workload)
            tok = None if spec.trace else workload.load_tokenizer(opts.tokenizer)
            self.items = workload.generate(spec, tok, opts.seed)
        runner = environment.runner
        index = getattr(runner, "worker_index", 0) if isinstance(runner, WorkerRunner) else 0
        self.stride = (
            max(1, int(getattr(opts, "expect_workers", 1) or 1)) if isinstance(runner, WorkerRunner) else 1
        )
        self.worker_index = max(0, index)
        self.offset = self.worker_index + max(
            0, int(getattr(opts, "item_offset", 0) or 0)
        )  # first item this process sends
        self.counter = itertools.count()
        self.ids = itertools.count(1)
        self.user_ids = itertools.count(1)
        self.sent = 0
        self.warmup_left = max(0, int(opts.warmup))
        self.records: list[RequestRecord] = []
        self.records_dir = Path(opts.records_dir) if opts.records_dir else None
        self.pool = gevent.pool.Pool(opts.max_inflight or None)
        self.batch_dim = False
        if self.protocol == "grpc-stream":
            bd = str(getattr(opts, "batch_dim", "auto"))
            self.batch_dim = (
                protocols.has_batch_dim(environment.host or "", opts.model) if bd == "auto" else bd == "1"
            )
        self.skipped = 0  # open loop: arrivals dropped at the in-flight cap
        self.grpc: protocols.GrpcMux | None = None  # open loop: one stream per process
        self.unfinished = 0
        self.cpu: list[float] = []
        self.lag: list[float] = []
        self.started = time.time()
        self.monitor = gevent.spawn(self._monitor)

    def next_item(self) -> dict[str, Any]:
        n = next(self.counter)
        self.sent += 1
        return self.items[(self.offset + n * self.stride) % len(self.items)]

    def _monitor(self) -> None:
        """CPU of this process and event-loop lag (a busy loop delays every timestamp)."""
        import psutil

        proc = psutil.Process()
        proc.cpu_percent(None)
        tick, last_cpu = 0.1, time.monotonic()
        while True:
            t0 = time.monotonic()
            gevent.sleep(tick)
            self.lag.append(max(0.0, time.monotonic() - t0 - tick))
            if time.monotonic() - last_cpu >= 1.0:
                self.cpu.append(proc.cpu_percent(None))
                last_cpu = time.monotonic()

    def record(self, rec: RequestRecord) -> None:
        if self.records_dir is None:
            return
        self.records.append(rec)
        if len(self.records) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.records_dir is None or not self.records:
            return
        batch, self.records = self.records, []
        append_jsonl(batch, self.records_dir / f"records-{PROCESS.replace(':', '-')}.jsonl")

    def finish(self) -> None:
        """Let in-flight open-loop requests end, then write records and process stats."""
        self.pool.join(timeout=self.opts.request_timeout)
        self.unfinished = len(self.pool)
        self.pool.kill(timeout=5)  # recorded as `interrupted`
        self.monitor.kill()
        if self.grpc is not None:
            self.grpc.close()
        self.flush()
        if self.records_dir is not None:
            lag_sorted = sorted(self.lag) or [0.0]
            stats = {
                "process": PROCESS,
                "worker_index": self.worker_index,
                "started": self.started,
                "stopped": time.time(),
                "requests_started": self.sent,
                "open_loop_skipped": self.skipped,
                "unfinished_at_stop": self.unfinished,
                "cpu_percent": self.cpu,
                "loop_lag_ms_p99": round(lag_sorted[int(0.99 * (len(lag_sorted) - 1))] * 1000, 2),
                "loop_lag_ms_max": round(lag_sorted[-1] * 1000, 2),
            }
            path = self.records_dir / f"proc-{PROCESS.replace(':', '-')}.json"
            path.write_text(json.dumps(stats))


STATE: _Process | None = None


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    # Open-loop users split the total rate; workers learn the total user count from the master
    # (custom options travel with the spawn message).
    opts = environment.parsed_options
    if opts is not None and isinstance(environment.runner, (MasterRunner, LocalRunner)):
        opts.tf_total_users = int(getattr(opts, "num_users", 1) or 1)


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    global STATE
    if isinstance(environment.runner, MasterRunner):
        return
    STATE = _Process(environment)


@events.test_stop.add_listener
def _on_test_stop(environment: Any, **_: Any) -> None:
    global STATE
    if STATE is not None:
        STATE.finish()
        STATE = None


def _grpc_url(host: str, explicit: str) -> str:
    if explicit:
        return explicit
    from urllib.parse import urlsplit

    parts = urlsplit(host if "://" in host else f"http://{host}")
    port = (parts.port or 8000) + 1
    return f"{parts.hostname or '127.0.0.1'}:{port}"


class _GeventPost:
    """geventhttpclient as a `protocols.PostFn` (what Locust's FastHttpUser uses underneath)."""

    def __init__(self, host: str, concurrency: int, timeout: float) -> None:
        from geventhttpclient import HTTPClient
        from geventhttpclient.url import URL

        url = URL(host if "://" in host else f"http://{host}")
        self.client = HTTPClient(
            url.host, url.port, concurrency=concurrency, network_timeout=timeout, connection_timeout=10.0
        )
        self.last: Any = None

    def __call__(self, path: str, body: bytes) -> Any:
        resp = self.client.post(path, body=body, headers={"Content-Type": "application/json"})
        self.last = resp
        return _GeventResponse(resp)

    def reset(self) -> None:
        """Drop the socket of a response that was not read to the end."""
        resp, self.last = self.last, None
        if resp is not None and getattr(resp, "_sock", None) is not None and not resp.message_complete:
            try:
                resp._pool.release_socket(resp._sock)
            except Exception:  # noqa: BLE001
                pass
            resp._sock = None

    def close(self) -> None:
        self.client.close()


class _GeventResponse:
    __slots__ = ("r", "status")

    def __init__(self, r: Any) -> None:
        self.r, self.status = r, r.status_code

    def readline(self) -> bytes:
        return self.r.readline(b"\n")

    def read(self) -> bytes:
        return self.r.read()


class TritonLLMUser(User):
    """One Locust user against a Triton LLM model (closed or open loop, see the module doc)."""

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.opts = opts
        self.proc = STATE
        self.protocol = opts.protocol
        self.user_id = next(STATE.user_ids) if STATE is not None else 0
        users = max(1, int(getattr(opts, "tf_total_users", 0) or getattr(opts, "num_users", 1) or 1))
        self.rate = float(opts.request_rate or 0.0) / users
        self.rng = random.Random(f"{opts.seed}-{PROCESS}-{self.user_id}")
        self.next_due = 0.0  # open loop: set at the first task, so slow start-ups do not pile up
        self.post: _GeventPost | None = None
        self.grpc: protocols.GrpcMux | None = None
        if self.protocol == "grpc-stream":
            url = _grpc_url(self.host, opts.grpc_url)
            if self.rate <= 0:
                self.grpc = protocols.GrpcMux(
                    url, opts.model, opts.request_timeout, self.proc.batch_dim if self.proc else False
                )
                self.grpc.open()  # connect before the first measured request
            elif self.proc is not None and self.proc.grpc is None:
                self.proc.grpc = protocols.GrpcMux(url, opts.model, opts.request_timeout, self.proc.batch_dim)
                self.proc.grpc.open()
        else:
            conc = 1 if self.rate <= 0 else max(1, opts.max_inflight or 256)
            self.post = _GeventPost(self.host, conc, opts.request_timeout)

    def on_stop(self) -> None:
        if self.grpc is not None:
            self.grpc.close()
            self.grpc = None

    def wait_time(self) -> float:
        """Closed loop: none. Open loop: until the next Poisson arrival."""
        if self.rate <= 0 or not self.next_due:
            return 0.0
        return max(0.0, self.next_due - time.time())

    @task
    def request(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if self.rate <= 0:
            self._one(proc, proc.next_item(), None)
            return
        now = time.time()
        due = self.next_due or now
        self.next_due = max(due, now - 1.0) + self.rng.expovariate(self.rate)
        if proc.pool.full():
            proc.skipped += 1
            return
        proc.pool.spawn(self._one, proc, proc.next_item(), due)

    def _send(self, item: dict[str, Any]) -> protocols.Outcome:
        if self.protocol == "grpc-stream":
            mux = self.grpc or (self.proc.grpc if self.proc else None)
            assert mux is not None
            return mux.request(item, True)
        assert self.post is not None
        return protocols.http_request(self.post, self.opts.model, item, self.protocol == "http-stream")

    def _one(self, proc: _Process, item: dict[str, Any], scheduled: float | None) -> None:
        warm = proc.warmup_left > 0
        if warm:
            proc.warmup_left -= 1
        try:
            out = self._send(item)
        except BaseException as exc:  # GreenletExit at a forced stop: record it, then let it through
            out = protocols.Outcome(
                start=time.time(), e2e_s=0.0, error_type="interrupted", error=type(exc).__name__
            )
            self._report(proc, item, out, scheduled, warm)
            raise
        self._report(proc, item, out, scheduled, warm)

    def _report(
        self,
        proc: _Process,
        item: dict[str, Any],
        out: protocols.Outcome,
        scheduled: float | None,
        warm: bool,
    ) -> None:
        rec = RequestRecord.from_outcome(
            out,
            item,
            id=f"{PROCESS}/{next(proc.ids)}",
            level=self.opts.level,
            repeat=self.opts.repeat_index,
            process=PROCESS,
            user=self.user_id,
            protocol=self.protocol,
            model=self.opts.model,
            warmup=warm,
            scheduled=scheduled,
        )
        proc.record(rec)
        if out.error_type == "interrupted":
            return
        fire = self.environment.events.request.fire
        kind = "warmup" if warm else self.protocol
        tokens = out.server_tokens if out.server_tokens is not None else 0
        if not out.ok:
            fire(
                request_type=kind,
                name="E2E",
                response_time=(out.e2e_s or 0) * 1000,
                response_length=0,
                exception=RuntimeError(f"{out.error_type}: {out.error}"),
                context={},
            )
            return
        if out.ttft_s is not None:
            fire(
                request_type=kind,
                name="TTFT",
                response_time=out.ttft_s * 1000,
                response_length=tokens,
                exception=None,
                context={},
            )
            n = (
                out.server_tokens if out.server_tokens is not None else out.chunks
            )  # chunks: one token each, typically
            if n > 1 and out.e2e_s is not None:
                itl_ms = (out.e2e_s - out.ttft_s) / (n - 1) * 1000
                fire(
                    request_type=kind,
                    name="ITL",
                    response_time=itl_ms,
                    response_length=tokens,
                    exception=None,
                    context={},
                )
        fire(
            request_type=kind,
            name="E2E",
            response_time=(out.e2e_s or 0) * 1000,
            response_length=tokens,
            exception=None,
            context={},
        )
