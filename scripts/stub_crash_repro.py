"""Reproduce the CPU Python-backend stub crash under streaming load, and show what avoids it (< 60 s a mode).

    python scripts/stub_crash_repro.py [--mode inline|hold|none|all] [--seconds 20] [--shm-bytes N]

Serves a throwaway decoupled Python model (written to a temporary directory) with the real tritonserver and
drives it with `--clients` gRPC streams; each stream asks for output OUT only. Every response the model sends
from its worker threads carries OUT plus `--extras` small outputs nobody asked for, while another model thread
allocates Python objects all the time (as an engine loop does). `--mode` picks how the model sends:

- inline: `sender.send(InferenceResponse(output_tensors=build()))`: the response holds the only reference
  to the unrequested tensors. The stub drops them in `ResponseSender::Send` (`PruneOutputTensors`) after
  releasing the GIL (https://github.com/triton-inference-server/python_backend, src/response_sender.cc,
  r24.10 = Triton 2.51), so their numpy arrays are freed without the GIL and pymalloc is corrupted: the stub
  segfaults, usually in whichever thread allocates next ("Fatal Python error: Segmentation fault").
- hold: the same tensors, but the model keeps its list of them until send() returns, so the last reference
  is dropped by the model, with the GIL.
- keep: as inline, but `keep = response.output_tensors()` before send() and `del keep` after: the same
  cure for a model that builds its response elsewhere.
- none: only the requested output is sent (nothing to prune).

Prints one line per mode: responses received, whether and when the stub died, and what Triton said about it
afterwards (`/v2/health/ready`, the model's ready endpoint, "is not healthy" in its log). Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import queue
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from tritonforge.ensembles.server import TritonServer, free_ports

MODEL = "prune_repro"

CONFIG = """name: "prune_repro"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "N" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_UINT8 dims: [ -1 ] }, { name: "EXTRA" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters { key: "mode" value: { string_value: "%(mode)s" } }
parameters { key: "extras" value: { string_value: "%(extras)d" } }
"""

MODEL_PY = """
import faulthandler
import json
import sys
import threading

import numpy as np
import triton_python_backend_utils as pb_utils

faulthandler.enable(file=sys.stderr, all_threads=True)


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"])["parameters"]
        self.mode = params["mode"]["string_value"]
        self.extras = int(params["extras"]["string_value"]) if self.mode != "none" else 0
        self.stopping = threading.Event()
        threading.Thread(target=self._churn, daemon=True).start()

    def _churn(self):
        while not self.stopping.is_set():
            junk = [{"i": i, "s": str(i)} for i in range(200)]
            del junk

    def _outputs(self, k):
        out = [pb_utils.Tensor("OUT", np.full((1000,), k % 251, dtype=np.uint8))]
        out += [pb_utils.Tensor("EXTRA", np.array([float(k + j)] * 4, dtype=np.float32)) for j in range(self.extras)]
        return out

    def _serve(self, request, n):
        sender = request.get_response_sender()
        try:
            for k in range(n):
                if self.mode == "hold":
                    out = self._outputs(k)
                    sender.send(pb_utils.InferenceResponse(output_tensors=out))
                    del out
                elif self.mode == "keep":
                    response = pb_utils.InferenceResponse(output_tensors=self._outputs(k))
                    keep = response.output_tensors()  # new owners of the same tensors
                    sender.send(response)
                    del keep
                else:
                    sender.send(pb_utils.InferenceResponse(output_tensors=self._outputs(k)))
        finally:
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def execute(self, requests):
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy()[0])
            threading.Thread(target=self._serve, args=(request, n), daemon=True).start()
        return None

    def finalize(self):
        self.stopping.set()
"""


def stub_states(server_pid: int) -> dict[int, str]:
    """pid -> state letter (/proc/<pid>/stat) of the server's Python stubs; "Z": exited, not reaped."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if comm.startswith("triton_python") and int(fields[1]) == server_pid:
            out[int(entry)] = fields[0]
    return out


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


def run(mode: str, args: argparse.Namespace, workdir: Path) -> str:
    repo = workdir / mode
    (repo / MODEL / "1").mkdir(parents=True)
    (repo / MODEL / "config.pbtxt").write_text(CONFIG % {"mode": mode, "extras": args.extras})
    (repo / MODEL / "1" / "model.py").write_text(MODEL_PY)
    extra = [f"--backend-config=python,shm-default-byte-size={args.shm_bytes}"] if args.shm_bytes else []
    server = TritonServer(repo, ports=free_ports(), log_path=workdir / f"{mode}.log", extra_args=extra)
    counts = {"responses": 0, "streams": 0}
    lock = threading.Lock()
    with server:
        server.wait_ready(120)
        pid = server.proc.pid if server.proc else 0
        t0 = time.monotonic()
        deadline = t0 + args.seconds

        def client() -> None:
            while time.monotonic() < deadline:
                q: queue.Queue = queue.Queue()
                c = grpcclient.InferenceServerClient(server.grpc_url)
                c.start_stream(callback=lambda result, error, q=q: q.put((result, error)))
                n = grpcclient.InferInput("N", [1], "INT32")
                n.set_data_from_numpy(np.array([args.responses], np.int32))
                c.async_stream_infer(
                    MODEL,
                    [n],
                    outputs=[grpcclient.InferRequestedOutput("OUT")],
                    enable_empty_final_response=True,
                )
                try:
                    while True:
                        result, error = q.get(timeout=5)
                        if error is not None:
                            return
                        resp = result.get_response()
                        if resp.parameters["triton_final_response"].bool_param:
                            break
                        with lock:
                            counts["responses"] += 1
                except queue.Empty:
                    return  # a stream whose stub died never ends: leave it (daemon thread)
                c.stop_stream()
                c.close()
                with lock:
                    counts["streams"] += 1

        threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
        for t in threads:
            t.start()
        died_at = None
        while time.monotonic() < deadline + 6 and any(t.is_alive() for t in threads):
            if any(state == "Z" for state in stub_states(pid).values()) or not stub_states(pid):
                died_at = time.monotonic() - t0
                time.sleep(2)  # what Triton says a moment after the crash
                break
            time.sleep(0.2)
        ready = http_status(f"{server.http_url}/v2/health/ready")
        model_ready = http_status(f"{server.http_url}/v2/models/{MODEL}/ready")
    log = server.log_text()
    crashed = f"stub died after {died_at:.1f} s" if died_at is not None else "stub alive"
    return (
        f"mode={mode:<6} {crashed:<22} responses={counts['responses']} streams={counts['streams']} "
        f"fatal_in_log={log.count('Fatal Python error')} health_ready={ready} model_ready={model_ready} "
        f"not_healthy_in_log={log.count('is not healthy')} (log: {workdir / (mode + '.log')})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("inline", "hold", "keep", "none", "all"), default="all")
    ap.add_argument("--seconds", type=float, default=20.0, help="load per mode (default 20)")
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--responses", type=int, default=50, help="responses per stream")
    ap.add_argument("--extras", type=int, default=14, help="unrequested outputs per response")
    ap.add_argument("--shm-bytes", type=int, default=0, help="shm-default-byte-size (0: Triton's 1 MiB)")
    args = ap.parse_args()
    modes = ("inline", "hold", "keep", "none") if args.mode == "all" else (args.mode,)
    workdir = Path(tempfile.mkdtemp(prefix="tf-stub-repro-"))
    for mode in modes:
        print(run(mode, args, workdir), flush=True)
    os._exit(0)  # client threads of a dead stub's streams never end


if __name__ == "__main__":
    main()
