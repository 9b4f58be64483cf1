"""Requests in flight in a decoupled engine model (the `tensorrt_llm` models): how execute() starts each request
of a batch, how a request that cannot start is answered, which requests are live (by key, and by Triton request
id for a `stop` request) and the thread that polls them for cancellation.

A model passes its ``pb_utils`` in (see ``RequestInputs``), so this runs and is tested outside Triton too.
"""

import threading


class Replies:
    """Error responses of one model, and the per-request start loop of its execute()."""

    def __init__(self, pb_utils, model_name):
        self.pb_utils = pb_utils
        self.model_name = model_name

    def error(self, sender, message, invalid=False, cancelled=False):
        """Send `message` as the request's final response; a sender that is gone is ignored.

        invalid: the request is at fault (INVALID_ARG, HTTP 400), so a router does not retry it elsewhere.
        cancelled: the request was cancelled (CANCELLED), where this Triton has that code.
        """
        pb = self.pb_utils
        name = "INVALID_ARG" if invalid else "CANCELLED" if cancelled else None
        code = getattr(pb.TritonError, name, None) if name else None
        prefix = f"{self.model_name}: invalid request: " if invalid else f"{self.model_name}: "
        err = pb.TritonError(prefix + message, code) if code is not None else pb.TritonError(prefix + message)
        try:
            sender.send(pb.InferenceResponse(error=err), flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception:
            pass

    def start_each(self, requests, start, invalid):
        """Call ``start(request, sender)`` for each request; one that raises gets its own error response, so one
        request never hurts another (`invalid`, the model's refusal exception: answered as INVALID_ARG)."""
        for request in requests:
            sender = request.get_response_sender()
            try:
                start(request, sender)
            except invalid as exc:
                self.error(sender, str(exc), invalid=True)
            except Exception as exc:  # a malformed request must not take the model down
                self.error(sender, f"{type(exc).__name__}: {exc}")


class InFlight:
    """The live requests by key, the key of each Triton request id (for `stop`), and a cancellation watcher."""

    def __init__(self):
        # Re-entrant: a model may hold it around its engine's submit and add() inside, so a response that arrives
        # before submit returns finds the request registered.
        self.lock = threading.RLock()
        self._live = {}  # key -> the model's per-request state
        self._by_request_id = {}  # Triton request id -> key (the latest request with that id)
        self._stopping = threading.Event()

    def __len__(self):
        with self.lock:
            return len(self._live)

    def add(self, key, live, request_id):
        with self.lock:
            self._live[key] = live
            if request_id:
                self._by_request_id[request_id] = key

    def discard(self, key, request_id):
        """Forget a finished request (its request id only while it still names this request)."""
        with self.lock:
            self._live.pop(key, None)
            if request_id and self._by_request_id.get(request_id) == key:
                del self._by_request_id[request_id]

    def find(self, request_id):
        """The live request a `stop` request with this id ends, else None."""
        with self.lock:
            key = self._by_request_id.get(request_id) if request_id else None
            return None if key is None else self._live.get(key)

    def items(self):
        """A snapshot of (key, live) pairs."""
        with self.lock:
            return list(self._live.items())

    def watch(self, period_s, check, each_tick=None, name="tf-cancel-watch"):
        """Start a daemon thread that, every ``period_s()`` seconds until stop(), calls ``each_tick()`` (errors
        ignored) and then ``check(key, live)`` for each live request."""

        def loop():
            while not self._stopping.wait(period_s()):
                if each_tick is not None:
                    try:
                        each_tick()
                    except Exception:
                        pass
                for key, live in self.items():
                    check(key, live)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        return thread

    def stop(self):
        self._stopping.set()
