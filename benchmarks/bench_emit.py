"""emit of the largest example as a whole process (median of 5), and Triton cold start of the CPU demo.

Prints figures; asserts nothing. Targets: emit < 0.5 s; cold start to all-READY < 20 s.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TF = [sys.executable, "-m", "tritonforge"]


def largest_example() -> Path:
    return max((ROOT / "examples").glob("*.yaml"), key=lambda p: p.stat().st_size)


def bench_emit(runs: int = 5) -> None:
    spec = largest_example()
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            t0 = time.perf_counter()
            subprocess.run([*TF, "emit", str(spec), "-o", f"{tmp}/r{i}"], check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
    print(
        f"emit {spec.name} (whole process): median {statistics.median(times):.3f} s over {runs} "
        f"(min {min(times):.3f}, max {max(times):.3f})  target < 0.5 s"
    )


def bench_cold_start(runs: int = 3) -> None:
    from tritonforge.builder.spec import load_spec
    from tritonforge.ensembles.render import emit_files, write_repository
    from tritonforge.ensembles.server import TritonServer, free_ports

    spec_path = ROOT / "examples" / "cpu-demo.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        files, _ = emit_files(load_spec(spec_path), spec_path.parent)
        write_repository(files, Path(tmp) / "repo")
        times = []
        for _ in range(runs):
            server = TritonServer(Path(tmp) / "repo", free_ports())
            t0 = time.perf_counter()
            server.start()
            try:
                server.wait_ready(300)
                times.append(time.perf_counter() - t0)
            finally:
                server.stop()
    print(
        f"Triton cold start, CPU demo repository, to all-READY: median {statistics.median(times):.1f} s over {runs} "
        f"(min {min(times):.1f}, max {max(times):.1f})  target < 20 s"
    )


if __name__ == "__main__":
    bench_emit()
    bench_cold_start()
