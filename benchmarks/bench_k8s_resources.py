"""Resident memory of a CPU replica, to compare with the memory `tritonforge deploy k8s` requests for it.

Serves a spec's repository with the real CPU tritonserver, waits for READY, sends a few requests, and sums
the resident set (RSS) and proportional set (PSS, shared pages split) of the server and its Python-backend
stubs from /proc. Usage: python benchmarks/bench_k8s_resources.py [examples/cpu-demo.yaml]
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.request
from pathlib import Path

from tritonforge.builder.spec import load_spec
from tritonforge.ensembles.k8s import K8sOptions, plan_k8s
from tritonforge.ensembles.render import emit_files, write_repository
from tritonforge.ensembles.server import TritonServer, free_ports


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def _kib(pid: int, field: str, source: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{source}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> None:
    spec_path = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/cpu-demo.yaml")
    spec = load_spec(spec_path)
    plan = plan_k8s(spec, K8sOptions())
    with tempfile.TemporaryDirectory() as tmp:
        files, rplan = emit_files(spec, spec_path.resolve().parent)
        write_repository(files, Path(tmp) / "repo")
        with TritonServer(Path(tmp) / "repo", free_ports(), log_path=Path(tmp) / "triton.log") as server:
            took = server.wait_ready(300)
            body = json.dumps({"text_input": "def parse_args(argv):", "max_tokens": 32}).encode()
            for _ in range(4):
                req = urllib.request.Request(
                    f"{server.http_url}/v2/models/{rplan.entry_model}/generate", data=body
                )
                urllib.request.urlopen(req, timeout=60).read()  # noqa: S310
            pids = _tree(server.proc.pid)  # type: ignore[union-attr]
            rss = sum(_kib(p, "VmRSS", "status") for p in pids) / 1024
            pss = sum(_kib(p, "Pss", "smaps_rollup") for p in pids) / 1024
    requested = plan.resources["requests"]["memory"]
    print(
        f"{spec_path}: READY in {took:.1f}s; {len(pids)} processes; RSS {rss:.0f} MiB, PSS {pss:.0f} MiB; "
        f"deploy k8s requests {requested} (includes /dev/shm {plan.shm})"
    )


if __name__ == "__main__":
    main()
