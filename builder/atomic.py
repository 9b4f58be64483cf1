"""Publish a finished directory in one rename, so nothing half-written ever looks complete."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path


def replace_dir(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`, moving an older `out` aside first and deleting it only afterwards."""
    old = None
    if out.exists():
        old = out.with_name(f".old-{out.name}-{os.getpid()}-{time.time_ns()}")
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
