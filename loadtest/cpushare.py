"""The share of a core the CPU engine thread of a local Triton server gets, from /proc (Linux).

On a shared host the CPU reference engine's wall time per step is its CPU time per step divided by
the share of a core the scheduler gives its thread (with autogroup scheduling, per session, not per
thread: a probe in another process does not see it). The engine thread is the busiest thread of the
Python backend stub running `tensorrt_llm/1/model.py`; its CPU time over a level divided by the
level's wall time is the share it got (a lower bound: it also idles between requests).
See proc(5), /proc/[pid]/task/[tid]/stat fields 14-15 (utime, stime in clock ticks).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlsplit

ENGINE_MODEL = "/tensorrt_llm/1/model.py"
_LOCAL = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


def engine_pids(url: str, repo: str | None = None, proc: Path = Path("/proc")) -> list[int]:
    """Python backend stubs serving the CPU engine on this host (none for a remote --url)."""
    if (urlsplit(url).hostname or "") not in _LOCAL or not proc.is_dir():
        return []
    want = str(Path(repo).resolve()) + ENGINE_MODEL if repo else ENGINE_MODEL
    pids = []
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            args = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.decode(errors="replace").endswith(want) for a in args[1:3]) and b"stub" in args[0]:
            pids.append(int(d.name))
    return pids


def thread_ticks(pids: list[int], proc: Path = Path("/proc")) -> dict[tuple[int, int], int]:
    """utime + stime (clock ticks) of every thread of `pids`."""
    out: dict[tuple[int, int], int] = {}
    for pid in pids:
        try:
            tasks = list((proc / str(pid) / "task").iterdir())
        except OSError:
            continue
        for t in tasks:
            try:
                fields = (t / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            out[(pid, int(t.name))] = int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat
    return out


class ShareMeter:
    """CPU share of the busiest engine thread between `start()` and `stop()`."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.t0 = 0.0
        self.before: dict[tuple[int, int], int] = {}

    def start(self) -> None:
        self.before, self.t0 = thread_ticks(self.pids), time.perf_counter()

    def stop(self) -> float | None:
        if not self.pids:
            return None
        after, wall = thread_ticks(self.pids), time.perf_counter() - self.t0
        busiest = max((after[k] - v for k, v in self.before.items() if k in after), default=0)
        if wall <= 0 or busiest <= 0:
            return None
        return min(1.0, busiest / os.sysconf("SC_CLK_TCK") / wall)
