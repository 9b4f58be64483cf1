"""Triton request/response handling shared by the Locust users and the warm-up client.

Three protocols: `http-stream` (POST /v2/models/M/generate_stream, Server-Sent Events, one
`data: {...}` per response), `http` (POST /v2/models/M/generate, one JSON) and `grpc-stream`
(tritonclient.grpc decoupled streaming). Transports are injected, so the same code runs under
gevent (geventhttpclient in Locust) and in plain threads (http.client).
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from tritonforge.loadtest.parsing import PROTOCOLS  # noqa: F401  (re-exported)

STREAMING = {"http-stream", "grpc-stream"}


@dataclass
class Outcome:
    """What one request did, timed from just before it was sent."""

    start: float  # wall clock (epoch seconds) when sent
    ttft_s: float | None = None  # first non-empty response (streaming only)
    e2e_s: float | None = None  # last response (or the failure)
    chunks: int = 0  # responses received
    server_tokens: int | None = None  # sum of num_output_tokens when the server reports it
    text: str = ""
    tier: str | None = None
    cache_status: str | None = None
    error_type: str = ""  # "" = success; else a class (see classify_exception)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error_type


def build_payload(item: dict[str, Any], stream: bool) -> dict[str, Any]:
    """The generate-extension JSON body for one workload item (its `inputs` plus the prompt)."""
    body: dict[str, Any] = {"text_input": item["prompt"], "max_tokens": int(item["max_tokens"])}
    if item.get("min_tokens") is not None:
        body["min_tokens"] = int(item["min_tokens"])
    body.update(item.get("inputs") or {})
    body["stream"] = stream
    return body


class Accumulator:
    """Collects the responses of one request into an `Outcome`."""

    def __init__(self, stream: bool) -> None:
        self.stream = stream
        self.t0 = time.perf_counter()
        self.outcome = Outcome(start=time.time())
        self.pieces: list[str] = []

    def add(self, outputs: dict[str, Any]) -> None:
        """One response's outputs (text_output, num_output_tokens, tier, cache_status, error)."""
        now = time.perf_counter() - self.t0
        out = self.outcome
        if outputs.get("error"):
            self.fail("server_error", str(outputs["error"]))
            return
        out.chunks += 1
        text = _as_text(outputs.get("text_output"))
        n = outputs.get("num_output_tokens")
        if n is not None:
            n = _as_int(n)
            out.server_tokens = (out.server_tokens or 0) + n
        if text:
            self.pieces.append(text)
        if out.ttft_s is None and self.stream and (text or (n or 0) > 0):
            out.ttft_s = now
        for key in ("tier", "cache_status"):
            if outputs.get(key) is not None:
                setattr(out, key, _as_text(outputs[key]))
        out.e2e_s = now

    def fail(self, error_type: str, message: str) -> None:
        out = self.outcome
        if not out.error_type:
            out.error_type, out.error = error_type, " ".join(message.split())[:300]
        out.e2e_s = time.perf_counter() - self.t0

    def finish(self) -> Outcome:
        out = self.outcome
        out.text = "".join(self.pieces)
        if out.e2e_s is None:
            out.e2e_s = time.perf_counter() - self.t0
        if out.ok and out.chunks == 0:
            self.fail("empty_response", "the server closed the response without sending any output")
        elif out.ok and not out.text and not out.server_tokens:
            self.fail("empty_response", "the responses carried no text_output")
        return out


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "".join(_as_text(v) for v in value)
    if hasattr(value, "tolist"):  # numpy array from gRPC
        return _as_text(value.tolist())
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _as_int(value: Any) -> int:
    if hasattr(value, "tolist"):
        value = value.tolist()
    while isinstance(value, (list, tuple)):
        value = value[0] if value else 0
    return int(value)


def has_batch_dim(http_url: str, model: str, timeout: float = 5.0) -> bool:
    """Does `model` batch (max_batch_size > 0, so gRPC inputs need a batch dimension)? False if unknown."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{http_url.rstrip('/')}/v2/models/{model}/config", timeout=timeout) as r:  # noqa: S310
            return int(json.loads(r.read()).get("max_batch_size") or 0) > 0
    except Exception:  # noqa: BLE001 - an unreadable config: assume no batch dimension
        return False


def classify_exception(exc: BaseException) -> tuple[str, str]:
    """(error class, message) for a client-side exception."""
    name = type(exc).__name__
    text = f"{name}: {exc}"
    if (
        isinstance(exc, (socket.timeout, TimeoutError))
        or "timeout" in name.lower()
        or "timed out" in str(exc)
    ):
        return "timeout", text
    if (
        isinstance(exc, (ConnectionError, http.client.RemoteDisconnected))
        or "Connection" in name
        or "closed" in str(exc)
    ):
        return "connection", text
    if isinstance(exc, (ValueError, http.client.HTTPException)):
        return "protocol", text
    return "client", text


# ------------------------------------------------------------------------------------------ HTTP


class Response(Protocol):
    status: int

    def readline(self) -> bytes: ...
    def read(self) -> bytes: ...


PostFn = Callable[[str, bytes], Response]  # (path, JSON body) -> response with the body unread


def http_request(post: PostFn, model: str, item: dict[str, Any], stream: bool) -> Outcome:
    """One generate / generate_stream request over `post`."""
    path = f"/v2/models/{model}/generate_stream" if stream else f"/v2/models/{model}/generate"
    body = json.dumps(build_payload(item, stream)).encode()
    acc = Accumulator(stream)
    try:
        resp = post(path, body)
        if resp.status != 200:
            acc.fail(f"http_{resp.status}", _error_text(resp.read()))
        elif stream:
            read_sse(resp.readline, acc)
        else:
            acc.add(json.loads(resp.read()))
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, never dropped
        acc.fail(*classify_exception(exc))
    if acc.outcome.error_type and hasattr(post, "reset"):
        post.reset()  # a half-read response must not go back to the connection pool
    return acc.finish()


def read_sse(readline: Callable[[], bytes], acc: Accumulator) -> None:
    """Feed each `data:` event of a Server-Sent Events body to `acc` until the body ends."""
    while True:
        line = readline()
        if not line:
            return
        if not line.startswith(b"data:"):
            continue  # blank separators, comments, `event:` lines
        payload = line[5:].strip()
        if not payload:
            continue
        try:
            obj = json.loads(payload)
        except ValueError:
            acc.fail("protocol", f"unparseable SSE event: {payload[:120]!r}")
            return
        acc.add(obj)
        if acc.outcome.error_type:
            return


def _error_text(body: bytes) -> str:
    try:
        obj = json.loads(body)
        if isinstance(obj, dict) and "error" in obj:
            return str(obj["error"])
    except ValueError:
        pass
    return body.decode("utf-8", errors="replace")[:300]


class StdlibHttp:
    """A keep-alive http.client connection as a `PostFn` (threads, warm-up, plain scripts)."""

    def __init__(self, base_url: str, timeout: float = 120.0) -> None:
        parts = urlsplit(base_url if "://" in base_url else f"http://{base_url}")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def __call__(self, path: str, body: bytes) -> Response:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", path, body, {"Content-Type": "application/json"})
                return self.conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def reset(self) -> None:
        self.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# ------------------------------------------------------------------------------------------ gRPC


def grpc_request(
    model: str, request_id: str, item: dict[str, Any], stream: bool, batch_dim: bool = False
) -> Any:
    """A ModelInferRequest (typed contents, no private tritonclient API) for one workload item.

    `batch_dim`: the model has max_batch_size > 0, so every input gets a leading batch dimension.
    """
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    for name, value in build_payload(item, stream).items():
        t = req.inputs.add()
        t.name = name
        t.shape.extend([1, 1] if batch_dim else [1])
        if isinstance(value, bool):
            t.datatype = "BOOL"
            t.contents.bool_contents.append(value)
        elif isinstance(value, int) and name == "seed":
            t.datatype = "UINT64"
            t.contents.uint64_contents.append(value)
        elif isinstance(value, int):
            t.datatype = "INT32"
            t.contents.int_contents.append(value)
        elif isinstance(value, float):
            t.datatype = "FP32"
            t.contents.fp32_contents.append(value)
        else:
            t.datatype = "BYTES"
            t.contents.bytes_contents.append(str(value).encode("utf-8"))
    req.parameters["triton_enable_empty_final_response"].bool_param = True
    return req


_FIXED = {
    "INT32": "<i",
    "INT64": "<q",
    "UINT64": "<Q",
    "FP32": "<f",
    "BOOL": "<?",
    "INT8": "<b",
    "UINT32": "<I",
}


def _decode_raw(datatype: str, raw: bytes) -> list[Any]:
    """Elements of one raw output tensor (BYTES: 4-byte little-endian length, then the bytes)."""
    if datatype == "BYTES":
        out, i = [], 0
        while i + 4 <= len(raw):
            n = int.from_bytes(raw[i : i + 4], "little")
            out.append(raw[i + 4 : i + 4 + n])
            i += 4 + n
        return out
    fmt = _FIXED.get(datatype)
    if fmt is None:
        return []
    return [v[0] for v in struct.iter_unpack(fmt, raw)]


def grpc_outputs(infer_response: Any) -> tuple[dict[str, Any], bool]:
    """(outputs by name, final flag) of one ModelInferResponse (raw contents decoded without numpy)."""
    raw = infer_response.raw_output_contents
    outputs: dict[str, Any] = {}
    for i, o in enumerate(infer_response.outputs):
        if i < len(raw):
            outputs[o.name] = _decode_raw(o.datatype, raw[i])
        else:  # typed contents (servers that do not send raw)
            c = o.contents
            outputs[o.name] = list(
                c.bytes_contents or c.int_contents or c.int64_contents or c.fp32_contents or c.bool_contents
            )
    final_param = infer_response.parameters.get("triton_final_response")
    final = bool(final_param.bool_param) if final_param is not None else False
    return outputs, final


class GrpcMux:
    """One channel and one decoupled `ModelStreamInfer` stream carrying many requests, matched by id.

    Error responses carry the request id and the final flag, so concurrent requests share the
    stream safely. Runs in threads and, after `grpc.experimental.gevent.init_gevent()`, under
    gevent (the reader is then a greenlet). A broken stream fails its pending requests and is
    reopened by the next call. Call `close()` at the end (never leave closing to the GC).
    """

    def __init__(self, url: str, model: str, timeout: float = 120.0, batch_dim: bool = False) -> None:
        self.url, self.model, self.timeout, self.batch_dim = url, model, timeout, batch_dim
        self.channel: Any = None
        self.queue: Any = None
        self.pending: dict[str, tuple[Accumulator, Any]] = {}
        self.seq = 0

    def open(self) -> None:
        import queue
        import threading

        import grpc
        from tritonclient.grpc import service_pb2_grpc

        opts = [("grpc.max_receive_message_length", 2**31 - 1), ("grpc.max_send_message_length", 2**31 - 1)]
        self.channel = grpc.insecure_channel(self.url, options=opts)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self.queue = queue.Queue()
        call = stub.ModelStreamInfer(iter(self.queue.get, None))
        threading.Thread(target=self._read, args=(call, self.queue), daemon=True).start()

    def _read(self, call: Any, q: Any) -> None:
        try:
            for resp in call:
                rid = resp.infer_response.id
                entry = self.pending.get(rid)
                if entry is None:
                    continue
                acc, done = entry
                if resp.error_message:
                    acc.fail("server_error", resp.error_message)
                    done.set()
                    continue
                try:
                    outputs, final = grpc_outputs(resp.infer_response)
                    if outputs:
                        acc.add(outputs)
                except Exception as exc:  # noqa: BLE001
                    acc.fail("protocol", f"{type(exc).__name__}: {exc}")
                    final = True
                if final or acc.outcome.error_type:
                    done.set()
            message = "the server ended the stream"
        except Exception as exc:  # noqa: BLE001 - grpc.RpcError and friends
            details_fn = getattr(exc, "details", None)
            details = details_fn() if callable(details_fn) else exc
            message = f"{type(exc).__name__}: {details}"
        if q is self.queue:  # this stream is gone: fail what waits on it, reopen on the next call
            self._drop()
        for acc, done in list(self.pending.values()):
            if not done.is_set():
                acc.fail("grpc_error", message)
                done.set()

    def _drop(self) -> None:
        q, ch = self.queue, self.channel
        self.queue = self.channel = None
        if q is not None:
            q.put(None)
        if ch is not None:
            try:
                ch.close()
            except Exception:  # noqa: BLE001
                pass

    def request(self, item: dict[str, Any], stream: bool = True) -> Outcome:
        import threading  # gevent-patched inside Locust

        acc = Accumulator(stream)
        self.seq += 1
        rid = str(self.seq)
        done = threading.Event()
        self.pending[rid] = (acc, done)
        try:
            if self.channel is None:
                self.open()
            q = self.queue  # the reader may drop a dead stream at any moment
            acc.t0 = time.perf_counter()  # opening a channel is not part of the request
            acc.outcome.start = time.time()
            if q is not None:
                q.put(grpc_request(self.model, rid, item, stream, self.batch_dim))
            if not done.wait(self.timeout):
                acc.fail("timeout", f"no final response within {self.timeout:g}s")
        except Exception as exc:  # noqa: BLE001
            acc.fail(*classify_exception(exc))
        finally:
            self.pending.pop(rid, None)
        return acc.finish()

    def close(self) -> None:
        self._drop()
