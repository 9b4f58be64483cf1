"""`llm`: the tritonforge entry model (decoupled Python backend, BLS).

Routes each request to a tier, answers from the response cache when it can, calls the tier's
ensemble by BLS (or a remote endpoint) with timeout and fallback, and streams the answer. All
logic lives in the vendored `tf_policy` package; this file only adapts Triton tensors to it.
Configuration: the `entry_config` parameter (JSON; its schema is `EntryConfig` in tf_policy/config.py).
"""

import faulthandler
import os
import sys

# Outside an NGC container tritonforge serves with the CPU Triton of nvidia-pytriton, whose Python stub
# ignores PYTHONPATH; `tritonforge serve` passes the interpreter's paths here instead (unset: no effect).
# The model's own folder comes first: it holds the packages vendored beside this file (tf_runtime, ...).
sys.path[0:0] = [
    p for p in os.environ.get("TRITONFORGE_PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path
]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# A crash of this model's process (the Python backend stub) prints every thread's Python stack to Triton's log.
faulthandler.enable()

import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils
from tf_common.respond import send as send_response
from tf_policy.config import parse_entry_config
from tf_policy.factory import build_service
from tf_policy.metrics import METRICS, Metrics
from tf_policy.params import RequestError, parse_request
from tf_policy.remote import TierError

ENTRY_ONLY = ("tier", "cache")
# The outputs each flag asks the tier for (the names of the backend's ensemble outputs); the entry passes
# through those its own config declares. Inputs are not listed here: they are the entry config's inputs,
# which tritonforge writes from its client contract, and every one a client sends goes to a local tier.
BASE_OUTPUTS = ("text_output", "num_output_tokens")
FLAG_OUTPUTS = {
    "return_log_probs": ("cum_log_probs", "output_log_probs"),
    "return_context_logits": ("context_logits",),
    "return_generation_logits": ("generation_logits",),
    "return_perf_metrics": (
        "kv_cache_alloc_new_blocks",
        "kv_cache_reused_blocks",
        "kv_cache_alloc_total_blocks",
        "arrival_time_ns",
        "first_scheduled_time_ns",
        "first_token_time_ns",
        "last_token_time_ns",
        "acceptance_rate",
        "total_accepted_draft_tokens",
        "total_draft_tokens",
    ),
    "return_num_input_tokens": ("num_input_tokens",),
}
MULTI_OUTPUTS = ("batch_index", "sequence_index")  # with several sequences or beams
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
CANCEL_CHECK_NS = 10_000_000  # how often a stream asks whether its client is still there


class _TritonLogHandler(logging.Handler):
    """tf_policy warnings go to the Triton log."""

    def emit(self, record):
        try:
            msg = "tf_policy: " + record.getMessage()
            if record.levelno >= logging.ERROR:
                pb_utils.Logger.log_error(msg)
            elif record.levelno >= logging.WARNING:
                pb_utils.Logger.log_warn(msg)
            else:
                pb_utils.Logger.log_info(msg)
        except Exception:  # noqa: BLE001
            pass


class TritonMetrics(Metrics):
    """tf_policy metrics as Triton custom metrics (served on the metrics port).

    Updates are buffered and applied by a background thread every `flush_s`: each metric call of
    the Python backend is an IPC round trip to the server, which must stay off the request path.
    """

    def __init__(self, model="", flush_s=0.5):
        self._model = model  # a label on every series: entry models sharing a server stay apart
        self._lock = threading.Lock()
        self._families = {}
        for name, (kind, desc) in METRICS.items():
            k = pb_utils.MetricFamily.COUNTER if kind == "counter" else pb_utils.MetricFamily.GAUGE
            self._families[name] = pb_utils.MetricFamily(name=name, description=desc, kind=k)
        self._series = {}
        self._counts = {}
        self._gauges = {}
        self._stop = threading.Event()
        self._flush_s = flush_s
        self._thread = threading.Thread(target=self._run, name="tf-metrics", daemon=True)
        self._thread.start()

    def count(self, name, value=1.0, **labels):
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._counts[key] = self._counts.get(key, 0.0) + float(value)

    def gauge(self, name, value, **labels):
        with self._lock:
            self._gauges[(name, tuple(sorted(labels.items())))] = float(value)

    def _metric(self, key):
        m = self._series.get(key)
        if m is None:
            m = self._families[key[0]].Metric(labels={"model": self._model, **{k: str(v) for k, v in key[1]}})
            self._series[key] = m
        return m

    def flush(self):
        with self._lock:
            counts, gauges = self._counts, self._gauges
            self._counts, self._gauges = {}, {}
        for key, v in counts.items():
            try:
                self._metric(key).increment(v)
            except Exception:  # noqa: BLE001 - metrics never fail a request
                pass
        for key, v in gauges.items():
            try:
                self._metric(key).set(v)
            except Exception:  # noqa: BLE001
                pass

    def _run(self):
        while not self._stop.wait(self._flush_s):
            self.flush()

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
        # Metrics before their families, while the stub still stands: one freed in its teardown segfaults it.
        self._series.clear()
        self._families.clear()


class _Cancelled(Exception):
    pass


def _strings(value):
    return np.array([value.encode("utf-8")], dtype=np.object_)


class TritonPythonModel:
    def initialize(self, args):
        pol = logging.getLogger("tf_policy")
        if not any(isinstance(h, _TritonLogHandler) for h in pol.handlers):
            pol.addHandler(_TritonLogHandler())
        pol.setLevel(logging.INFO)
        pol.propagate = False
        config = json.loads(args["model_config"])
        self.input_names = tuple(t["name"] for t in config.get("input", []))
        self.input_set = frozenset(self.input_names)
        self.output_names = frozenset(t["name"] for t in config.get("output", []))
        params = config.get("parameters") or {}
        raw = (params.get("entry_config") or {}).get("string_value")
        if not raw:
            raise pb_utils.TritonModelException(
                "llm: the `entry_config` parameter is missing; re-run tritonforge emit"
            )
        try:
            self.cfg = parse_entry_config(raw)
        except ValueError as exc:
            raise pb_utils.TritonModelException(f"llm: bad entry_config: {exc}") from None
        # tier -> its engine model, told to `stop` a request whose client went away (ensemble tiers only:
        # Triton 2.51 cannot cancel a BLS request, and an ensemble hands its request id to its steps)
        self.engines = {
            t.name: t.engine for t in self.cfg.tiers if t.engine and t.batched and not t.is_remote
        }
        self.metrics = TritonMetrics(model=args["model_name"])
        threads = int(os.environ.get("TRITONFORGE_EMBED_THREADS", "1"))
        device = os.environ.get("TRITONFORGE_EMBED_DEVICE", "cpu")
        self.service = build_service(
            self.cfg,
            os.path.dirname(__file__),
            self._call_local,
            self.metrics,
            embed_threads=threads,
            embed_device=device,
        )
        self.pool = ThreadPoolExecutor(
            max_workers=int(os.environ.get("TRITONFORGE_LLM_WORKERS", "64")), thread_name_prefix="tf-llm"
        )
        pb_utils.Logger.log_info(
            f"llm: tiers {', '.join(self.cfg.tier_names)}; router {self.service.router.policy.name}; "
            f"cache {'off' if self.service.cache is None else self.cfg.cache.backend}"
            f"{' + semantic' if self.service.cache is not None and self.service.cache.semantic else ''}"
        )
        # What the config asks for but this environment lacks (no redis package, no embedding model, no
        # hnswlib) was logged as an ERROR and set tf_cache_degraded{model,reason} = 1 by tf_policy.factory.

    # --- one local tier by BLS ----------------------------------------------------------------
    def _call_local(self, tier, req, timeout, cancel):
        stream = bool(req.stream and tier.streaming)
        tensors = []
        raw = dict(req.raw)
        raw["stream"] = np.array([stream], dtype=np.bool_)
        for name, arr in raw.items():
            if name in ENTRY_ONLY or arr is None:
                continue
            arr = np.asarray(arr)
            if tier.batched:
                arr = arr.reshape((1,) + arr.shape)
            tensors.append(pb_utils.Tensor(name, arr))
        rid = f"tf-llm-{uuid.uuid4().hex}"
        extras = self._extra_outputs(req)
        kwargs = dict(
            model_name=tier.model,
            inputs=tensors,
            requested_output_names=list(BASE_OUTPUTS + extras),
            request_id=rid,
        )
        try:
            ireq = pb_utils.InferenceRequest(timeout=int(timeout * 1e6), **kwargs)
        except TypeError:
            ireq = pb_utils.InferenceRequest(**kwargs)
        try:
            responses = ireq.exec(decoupled=True) if tier.streaming else [ireq.exec()]
        except Exception as exc:  # noqa: BLE001
            raise TierError(f"tier {tier.name} ({tier.model}): {exc}", _kind(str(exc))) from None
        complete = False
        stopped = threading.Lock()

        def stop_once():
            if not complete and stopped.acquire(blocking=False):
                self._stop(tier, rid, responses)

        on_set = getattr(cancel, "on_set", None)
        if tier.streaming and on_set is not None:
            # a semantic hit or a timeout cancels while this thread still waits for the engine: stop it now
            on_set(lambda: self.pool.submit(stop_once))
        try:
            for resp in responses:
                if cancel.is_set():  # the client went away (or the tier timed out)
                    return
                if resp.has_error():
                    complete = True
                    msg = resp.error().message()
                    raise TierError(f"tier {tier.name} ({tier.model}): {msg}", _kind(msg, resp.error()))
                out = pb_utils.get_output_tensor_by_name(resp, "text_output")
                if out is None:
                    continue  # the empty final response of a stream
                parts = [x if isinstance(x, bytes) else str(x).encode() for x in out.as_numpy().reshape(-1)]
                text = b"".join(parts).decode("utf-8", errors="replace")
                nt = pb_utils.get_output_tensor_by_name(resp, "num_output_tokens")
                n = int(nt.as_numpy().reshape(-1).sum()) if nt is not None else 0
                more = {}
                for name in extras:
                    t = pb_utils.get_output_tensor_by_name(resp, name)
                    if t is not None:
                        arr = t.as_numpy()
                        more[name] = (
                            arr[0] if tier.batched and arr.ndim > 1 else arr
                        )  # the entry has no batch dim
                yield (text, n, more) if more else (text, n)
            complete = True
        finally:  # left early (cancelled, timed out, consumer gone): free the engine's slot
            if not complete and tier.streaming:
                stop_once()

    def _extra_outputs(self, req):
        """The tier outputs beyond the text this request asks for and this entry declares."""
        names = [o for flag in req.extra_outputs() for o in FLAG_OUTPUTS.get(flag, ())]
        if any(req.params.get(k) not in (None, 1) for k in ("num_return_sequences", "beam_width")):
            names += MULTI_OUTPUTS
        return tuple(dict.fromkeys(o for o in names if o in self.output_names))

    def _stop(self, tier, rid, responses):
        """Cancel a tier call in flight: the response iterator's own cancel where Triton has one, else a
        TensorRT-LLM `stop` request (same request id) to the tier's engine."""
        stop = getattr(responses, "cancel", None)
        if stop is not None:
            try:
                stop()
                return
            except Exception:  # noqa: BLE001
                pass
        engine = self.engines.get(tier.name)
        if not engine:
            return
        one = np.array([[1]], dtype=np.int32)
        inputs = [
            pb_utils.Tensor("input_ids", np.array([[0]], dtype=np.int32)),
            pb_utils.Tensor("input_lengths", one),
            pb_utils.Tensor("request_output_len", one),
            pb_utils.Tensor("stop", np.array([[True]], dtype=np.bool_)),
        ]
        try:
            req = pb_utils.InferenceRequest(
                model_name=engine, inputs=inputs, request_id=rid, requested_output_names=["output_ids"]
            )
            for _ in req.exec(decoupled=True):
                pass
        except Exception as exc:  # noqa: BLE001 - best effort
            pb_utils.Logger.log_warn(f"llm: could not stop {engine} request {rid}: {exc}")

    # --- requests -----------------------------------------------------------------------------
    def execute(self, requests):
        for request in requests:
            self.pool.submit(self._serve, request)
        return None

    def _serve(self, request):
        sender = request.get_response_sender()
        done = False
        checked = [-CANCEL_CHECK_NS]  # when the client was last asked about (monotonic ns)
        streamed = [False]  # a chunk went out before the final response

        def send(reply):
            nonlocal done
            # is_cancelled() is a round trip to the server: asked before a stream's first chunk, then at most
            # every CANCEL_CHECK_NS, and once before a stream's final response (a client that left mid-stream is
            # counted even when its tier's stream was ended by someone else); never before a one-response answer.
            if not reply.final:
                now = time.monotonic_ns()
                if now - checked[0] >= CANCEL_CHECK_NS:
                    checked[0] = now
                    if sender.is_cancelled():
                        raise _Cancelled()
                streamed[0] = True
            elif streamed[0] and sender.is_cancelled():
                raise _Cancelled()
            if not reply.data:
                try:
                    sender.send(flags=FINAL)
                except Exception:  # noqa: BLE001 - the client is gone
                    raise _Cancelled() from None
                done = reply.final
                return
            resp = pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("text_output", _strings(reply.text)),
                    pb_utils.Tensor("num_output_tokens", np.array([reply.num_output_tokens], dtype=np.int32)),
                    pb_utils.Tensor("tier", _strings(reply.tier)),
                    pb_utils.Tensor("cache_status", _strings(reply.cache_status)),
                ]
                + [
                    pb_utils.Tensor(name, np.ascontiguousarray(arr))
                    for name, arr in (reply.extra or {}).items()
                ]
            )
            try:
                send_response(sender, resp, FINAL if reply.final else 0)
            except Exception:  # noqa: BLE001 - the client is gone
                raise _Cancelled() from None
            done = reply.final

        try:
            # one pass over what the client sent (get_input_tensor_by_name scans them all for every name)
            names = self.input_set
            inputs = {t.name(): t.as_numpy() for t in request.inputs() if t.name() in names}
            req = parse_request(inputs)
            self.service.handle(req, send)
        except _Cancelled:
            self.metrics.count("tf_entry_errors_total", kind="cancelled")
        except RequestError as exc:
            self.metrics.count("tf_entry_errors_total", kind="bad_request")
            self._error(sender, done, f"bad request: {exc}", pb_utils.TritonError.INVALID_ARG)
            done = True
        except TierError as exc:
            self.metrics.count("tf_entry_errors_total", kind="tier")
            self._error(sender, done, f"no tier could answer: {exc}", pb_utils.TritonError.UNAVAILABLE)
            done = True
        except Exception as exc:  # noqa: BLE001 - never leave a request without an answer
            self.metrics.count("tf_entry_errors_total", kind="internal")
            pb_utils.Logger.log_error(f"llm: internal error: {type(exc).__name__}: {exc}")
            self._error(
                sender,
                done,
                f"internal error in llm: {type(exc).__name__}: {exc}",
                pb_utils.TritonError.INTERNAL,
            )
            done = True
        if not done:
            try:
                sender.send(flags=FINAL)
            except Exception:  # noqa: BLE001
                pass

    @staticmethod
    def _error(sender, done, msg, code):
        if done:
            return
        try:
            err = pb_utils.TritonError(msg, code)
        except TypeError:
            err = pb_utils.TritonError(msg)
        try:
            sender.send(pb_utils.InferenceResponse(error=err), flags=FINAL)
        except Exception:  # noqa: BLE001
            pass

    def finalize(self):
        self.pool.shutdown(wait=True, cancel_futures=False)
        self.service.close()
        self.metrics.close()


def _kind(msg, error=None):
    invalid = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    try:
        if invalid is not None and error is not None and error.code() == invalid:
            return "invalid"  # the tier refused the request itself: not worth another tier
    except Exception:  # noqa: BLE001
        pass
    if "preprocessing: " in msg or "tensorrt_llm: invalid request: " in msg:
        return "invalid"  # where the error code is lost on the way (ensemble steps): the tier's own markers
    low = msg.lower()
    if "timeout" in low or "timed out" in low:
        return "timeout"
    if (
        "queue" in low
        or "unknown model" in low
        or "not found" in low
        or "unavailable" in low
        or "not ready" in low
    ):
        return "unavailable"
    return "error"
