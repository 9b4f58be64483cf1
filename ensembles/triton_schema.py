"""Triton's own `ModelConfig` protobuf schema, as shipped in `tritonclient`.

Loaded straight from its file: importing `tritonclient.grpc` would also pull in grpc and numpy, which
costs a third of a second in every `emit`. The module itself needs only protobuf.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def _load() -> ModuleType:
    name = "tritonclient.grpc.model_config_pb2"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("tritonclient is not installed; `pip install tritonclient[grpc]`")
    from pathlib import Path

    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    mod_spec = importlib.util.spec_from_file_location(name, path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


model_config_pb2 = _load()
