"""Where tritonforge keeps what it makes once and reuses (models, ONNX exports, the Triton backend copy)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache directory: ``cache_dir``, else ``$TRITONFORGE_CACHE``, else ``~/.cache/tritonforge``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("TRITONFORGE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "tritonforge"
