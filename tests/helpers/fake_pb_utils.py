"""A small, recording stand-in for `triton_python_backend_utils`, to run the Triton Python models without a server.

Written from the Python backend's documented interface (https://github.com/triton-inference-server/python_backend,
README.md: "Usage", "Error Handling", "Decoupled mode", "Async Execute", "Business Logic Scripting",
"Logging", "Custom Metrics"): `Tensor(name, array)` with `name()`/`as_numpy()`, `get_input_tensor_by_name`,
`get_output_tensor_by_name`, `InferenceRequest` (also the BLS request, with `exec`/`async_exec` and
`decoupled=True` response iterators), `InferenceResponse(output_tensors, error)`, `TritonError(message, code)`
with the documented codes, `TritonModelException`, `TRITONSERVER_RESPONSE_COMPLETE_FINAL`, the decoupled
response sender (`send(response=None, flags=0)`, `is_cancelled()`), `Logger` and `MetricFamily`. Only what
the models in model_repo_templates/models use; a BLS call goes to a Python function the test registers
(`register_model`), so a test scripts the engines a model calls.

`load_model(name)` imports model_repo_templates/models/<name>.py as Triton would run it (`<model>/1/model.py`
with `tf_runtime`, `tf_policy`, `tf_common` importable beside it) with this module as `pb_utils`.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "model_repo_templates"
MODELS = TEMPLATES / "models"
VENDORED = ("tf_runtime", "tf_policy", "tf_common")

TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1


# --------------------------------------------------------------------------- tensors and errors
class Tensor:
    """pb_utils.Tensor: a named numpy array."""

    def __init__(self, name: str, data: Any) -> None:
        if not isinstance(data, np.ndarray):
            raise TypeError(f"Tensor {name!r}: data must be a numpy array, got {type(data).__name__}")
        self._name = name
        self._data = data

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._data

    def is_cpu(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"Tensor({self._name!r}, {self._data!r})"


class TritonError:
    """pb_utils.TritonError(message, code=INTERNAL); the codes the README lists."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message = message
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def __repr__(self) -> str:
        return f"TritonError({self._message!r}, {self._code})"


class TritonModelException(Exception):
    """Raised by a model (e.g. from `initialize`) to fail loading or a call."""


class InferenceResponse:
    """pb_utils.InferenceResponse(output_tensors=[], error=None)."""

    def __init__(self, output_tensors: list[Tensor] | None = None, error: TritonError | None = None) -> None:
        self._tensors = list(output_tensors or [])
        self._error = error

    def output_tensors(self) -> list[Tensor]:
        return list(self._tensors)

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def outputs(self) -> dict[str, np.ndarray]:
        """Test convenience (not in pb_utils): output name -> array."""
        return {t.name(): t.as_numpy() for t in self._tensors}


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    for t in request.inputs():
        if t.name() == name:
            return t
    return None


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    for t in response.output_tensors():
        if t.name() == name:
            return t
    return None


def using_decoupled_model_transaction_policy(model_config: dict[str, Any]) -> bool:
    return bool((model_config.get("model_transaction_policy") or {}).get("decoupled", False))


# --------------------------------------------------------------------------- the response sender
class SenderClosed(Exception):
    """What the real sender raises for a send it refuses (python_backend src/response_sender.cc)."""


class ResponseSender:
    """The InferenceResponseSender of one request, recording what the model sends (thread-safe).

    It refuses what the real one refuses (https://github.com/triton-inference-server/python_backend,
    src/response_sender.cc): anything after the final flag, and for a non-decoupled model a second response
    or a final flag without a response (both seen raising with the CPU Triton 2.51 used here). A refused
    send raises and is recorded in `refused`."""

    def __init__(self, decoupled: bool = True) -> None:
        self.decoupled = decoupled
        self.sent: list[tuple[InferenceResponse | None, int]] = []
        self.refused: list[str] = []
        self.cancelled = False  # set by a test: the client went away
        self._final = threading.Event()
        self._settled = threading.Event()  # final, or a send refused: nothing more to wait for
        self._lock = threading.Lock()

    def _refuse(self, why: str) -> None:
        self.refused.append(why)
        self._settled.set()
        raise SenderClosed(f"Unable to send response. {why}")

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
        with self._lock:
            if self._final.is_set():
                self._refuse("Response sender has been closed.")
            if not self.decoupled:
                if any(r is not None for r, _ in self.sent):
                    self._refuse("Non-decoupled model cannot send more than one response.")
                if response is None and flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL:
                    self._refuse("Non-decoupled model cannot send complete final before sending a response.")
            self.sent.append((response, flags))
            if flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL:
                self._final.set()
                self._settled.set()

    def is_cancelled(self) -> bool:
        return self.cancelled

    # test conveniences
    @property
    def final(self) -> bool:
        return self._final.is_set()

    def wait_final(self, timeout: float = 60.0) -> bool:
        """Wait for the final flag (or a refused send); whether the final flag came. A guard against a hang,
        not a measurement."""
        self._settled.wait(timeout)
        return self._final.is_set() and not self.refused

    @property
    def responses(self) -> list[InferenceResponse]:
        return [r for r, _ in self.sent if r is not None]

    @property
    def errors(self) -> list[str]:
        return [r.error().message() for r in self.responses if r.has_error()]  # type: ignore[union-attr]


# --------------------------------------------------------------------------- requests and BLS
# model name -> handler(request) returning the responses that model sends, in order
_models: dict[str, Callable[[InferenceRequest], list[InferenceResponse]]] = {}
# every BLS request, in call order
calls: list[InferenceRequest] = []
_calls_lock = threading.Lock()


def register_model(name: str, handler: Callable[[InferenceRequest], list[InferenceResponse]]) -> None:
    """Script the model `name` for BLS calls: `handler(request)` returns the responses it sends."""
    _models[name] = handler


class ResponseIterator:
    """What `exec(decoupled=True)` returns: the called model's responses, then the empty final one that a
    decoupled model's `send(flags=FINAL)` without a response produces."""

    def __init__(self, responses: list[InferenceResponse], empty_final: bool) -> None:
        self._items = list(responses) + ([InferenceResponse()] if empty_final else [])

    def __iter__(self) -> Iterator[InferenceResponse]:
        return iter(self._items)


class InferenceRequest:
    """pb_utils.InferenceRequest: both a request a model receives and a BLS request it makes."""

    def __init__(
        self,
        model_name: str = "",
        inputs: list[Tensor] | None = None,
        requested_output_names: list[str] | None = None,
        request_id: str = "",
        correlation_id: int = 0,
        flags: int = 0,
        timeout: int = 0,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        self.model_name = model_name
        self._inputs = list(inputs or [])
        self._requested = list(requested_output_names or [])
        self._request_id = request_id
        self.timeout = timeout
        self.decoupled = True  # the receiving model's transaction policy (for its response sender)
        self._sender: ResponseSender | None = None

    def inputs(self) -> list[Tensor]:
        return list(self._inputs)

    def request_id(self) -> str:
        return self._request_id

    def requested_output_names(self) -> list[str]:
        return list(self._requested)

    def get_response_sender(self) -> ResponseSender:
        if self._sender is None:
            self._sender = ResponseSender(self.decoupled)
        return self._sender

    def is_cancelled(self) -> bool:
        return self._sender is not None and self._sender.cancelled

    # --- BLS
    def _run(self) -> list[InferenceResponse]:
        with _calls_lock:
            calls.append(self)
        handler = _models.get(self.model_name)
        if handler is None:
            error = TritonError(
                f"Failed for execute the inference request. Model '{self.model_name}' is not ready."
            )
            return [InferenceResponse(error=error)]
        try:
            return list(handler(self))
        except Exception as exc:  # the called model's failure comes back as an error response
            return [InferenceResponse(error=TritonError(f"{type(exc).__name__}: {exc}"))]

    def exec(self, decoupled: bool = False) -> Any:
        responses = self._run()
        if decoupled:
            return ResponseIterator(responses, empty_final=not any(r.has_error() for r in responses))
        if len(responses) != 1:
            raise TritonModelException(
                f"model {self.model_name} sent {len(responses)} responses: call it with decoupled=True"
            )
        return responses[0]

    async def async_exec(self, decoupled: bool = False) -> Any:
        return self.exec(decoupled=decoupled)

    # --- test conveniences (not in pb_utils)
    def input(self, name: str) -> np.ndarray | None:
        t = get_input_tensor_by_name(self, name)
        return None if t is None else t.as_numpy()


def make_request(request_id: str = "", decoupled: bool = True, **inputs: Any) -> InferenceRequest:
    """A request as Triton hands it to `execute` of a (non-)decoupled model: each keyword is one input."""
    tensors = [Tensor(k, v if isinstance(v, np.ndarray) else np.array(v)) for k, v in inputs.items()]
    request = InferenceRequest(inputs=tensors, request_id=request_id)
    request.decoupled = decoupled
    return request


# --------------------------------------------------------------------------- logging and metrics
log: list[tuple[str, str]] = []


class Logger:
    """pb_utils.Logger: messages recorded as (level, message)."""

    INFO, WARNING, ERROR, VERBOSE = "INFO", "WARNING", "ERROR", "VERBOSE"

    @staticmethod
    def log(message: str, level: str = "INFO") -> None:
        log.append((level, message))

    @staticmethod
    def log_info(message: str) -> None:
        log.append(("INFO", message))

    @staticmethod
    def log_warn(message: str) -> None:
        log.append(("WARNING", message))

    @staticmethod
    def log_error(message: str) -> None:
        log.append(("ERROR", message))

    @staticmethod
    def log_verbose(message: str) -> None:
        log.append(("VERBOSE", message))


class Metric:
    def __init__(self, family: MetricFamily, labels: dict[str, str]) -> None:
        self.family = family
        self.labels = dict(labels)
        self._value = 0.0

    def increment(self, value: float) -> None:
        if self.family.kind == MetricFamily.COUNTER and value < 0:
            raise TritonModelException("a counter cannot be decremented")
        self._value += value

    def set(self, value: float) -> None:
        if self.family.kind != MetricFamily.GAUGE:
            raise TritonModelException("only a gauge can be set")
        self._value = value

    def value(self) -> float:
        return self._value


metric_families: dict[str, MetricFamily] = {}


class MetricFamily:
    COUNTER, GAUGE, HISTOGRAM = "COUNTER", "GAUGE", "HISTOGRAM"

    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name, self.description, self.kind = name, description, kind
        self.metrics: list[Metric] = []
        metric_families[name] = self

    def Metric(self, labels: dict[str, str] | None = None) -> Metric:  # noqa: N802 - the pb_utils name
        m = Metric(self, labels or {})
        self.metrics.append(m)
        return m


def reset() -> None:
    """Forget scripted models, recorded calls, log lines and metrics (between tests)."""
    _models.clear()
    calls.clear()
    log.clear()
    metric_families.clear()


# --------------------------------------------------------------------------- loading a model
def model_args(name: str, config: dict[str, Any]) -> dict[str, str]:
    """The `args` dict Triton passes to `initialize` (README.md, "initialize")."""
    return {
        "model_config": json.dumps({"name": name, **config}),
        "model_instance_kind": "CPU",
        "model_instance_device_id": "0",
        "model_repository": str(MODELS),
        "model_version": "1",
        "model_name": name,
    }


def params(**values: Any) -> dict[str, dict[str, str]]:
    """Model-config `parameters` as Triton hands them over: {key: {"string_value": str}}."""
    return {k: {"string_value": str(v)} for k, v in values.items()}


_load_count = 0


@contextmanager
def load_model(name: str) -> Iterator[ModuleType]:
    """Import models/<name>.py with this module as `triton_python_backend_utils` and the vendored packages
    importable as inside Triton; on exit, sys.modules and sys.path are as they were."""
    global _load_count
    _load_count += 1
    saved_path = list(sys.path)
    saved_utils = sys.modules.get("triton_python_backend_utils")
    before = set(sys.modules)
    module_name = f"tf_test_model_{name}_{_load_count}"
    reset()
    sys.modules["triton_python_backend_utils"] = sys.modules[__name__]
    sys.path.insert(0, str(TEMPLATES))
    try:
        spec = importlib.util.spec_from_file_location(module_name, MODELS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        yield module
    finally:
        reset()
        sys.path[:] = saved_path
        for mod in set(sys.modules) - before:
            if mod == module_name or mod.split(".")[0] in VENDORED:
                del sys.modules[mod]
        if saved_utils is None:
            sys.modules.pop("triton_python_backend_utils", None)
        else:
            sys.modules["triton_python_backend_utils"] = saved_utils
