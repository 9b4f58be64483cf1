"""Each model gets exactly the vendored modules it imports: for every example, every Python model's vendored
files are each reached from its model.py through imports (also those inside functions, which run only later
inside Triton), and every import of a vendored package finds its file. Then each distinct model directory is
imported in a fresh interpreter that sees only that directory (and Triton's own `triton_python_backend_utils`,
from the CPU Triton of nvidia-pytriton), every vendored module with it."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, tiny_variant
from tritonforge.builder.spec import load_spec
from tritonforge.ensembles.render import emit_files

VENDORED = ("tf_common", "tf_policy", "tf_runtime")
EXAMPLE_NAMES = sorted(p.name for p in EXAMPLES.glob("*.yaml"))


def _emit(name: str, tmp: Path) -> dict[str, bytes]:
    spec_path = (
        tiny_variant(name, tmp) if "builtin:demo" in (EXAMPLES / name).read_text() else EXAMPLES / name
    )
    return emit_files(load_spec(spec_path), spec_path.parent)[0]


def _python_models(files: dict[str, bytes]) -> dict[str, dict[str, bytes]]:
    """model name -> {path under <model>/1/: bytes} of each model with a model.py."""
    models: dict[str, dict[str, bytes]] = {}
    for path, data in files.items():
        parts = path.split("/")
        if len(parts) >= 3 and parts[1] == "1":
            models.setdefault(parts[0], {})["/".join(parts[2:])] = data
    return {name: inside for name, inside in models.items() if "model.py" in inside}


def _module_name(rel: str) -> str:
    return rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def _imports(rel: str, source: bytes) -> list[tuple[str, bool]]:
    """(module, must exist) for every import anywhere in the file; `from a import b` may name module a.b."""
    package = _module_name(rel) if rel.endswith("__init__.py") else _module_name(rel).rpartition(".")[0]
    out: list[tuple[str, bool]] = []
    for node in ast.walk(ast.parse(source, rel)):
        if isinstance(node, ast.Import):
            out += [(alias.name, True) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (
                importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                if node.level
                else node.module
            )
            assert base, f"{rel}:{node.lineno}"
            out.append((base, True))
            out += [(f"{base}.{alias.name}", False) for alias in node.names]
    return out


def _file_of(module: str, inside: dict[str, bytes]) -> str | None:
    path = module.replace(".", "/")
    return next((p for p in (f"{path}.py", f"{path}/__init__.py") if p in inside), None)


def _reached(inside: dict[str, bytes]) -> tuple[set[str], list[str]]:
    """Files reached from model.py through imports of vendored packages, and the imports that found no file."""
    reached: set[str] = set()
    missing: list[str] = []
    todo = ["model.py"]
    while todo:
        rel = todo.pop()
        for module, required in _imports(rel, inside[rel]):
            parts = module.split(".")
            if parts[0] not in VENDORED:
                continue
            chain = [_file_of(".".join(parts[:i]), inside) for i in range(1, len(parts) + 1)]
            if chain[-1] is None and required:
                missing.append(f"{rel} imports {module}")
            for file in chain:
                if file is not None and file not in reached:
                    reached.add(file)
                    todo.append(file)
    return reached, missing


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_each_model_vendors_exactly_what_it_imports(name: str, tmp_path: Path) -> None:
    models = _python_models(_emit(name, tmp_path))
    assert models, f"{name}: no Python model"
    for model, inside in models.items():
        vendored = {p for p in inside if p.split("/")[0] in VENDORED}
        assert all(p.endswith(".py") for p in vendored), (model, sorted(vendored))
        reached, missing = _reached(inside)
        assert missing == [], f"{name}/{model}: {missing}"
        assert sorted(vendored - reached) == [], f"{name}/{model}: vendored but never imported"
        assert sorted(reached - vendored) == []


def test_the_engine_goes_only_into_the_cpu_engine_model(tmp_path: Path) -> None:
    models = _python_models(_emit("cpu-demo.yaml", tmp_path))
    assert "tf_runtime/engine.py" in models["tensorrt_llm"]
    assert {n for n, inside in models.items() if "tf_runtime/engine.py" in inside} == {"tensorrt_llm"}
    pre = {p for p in models["preprocessing"] if p.startswith("tf_runtime/")}
    assert pre == {"tf_runtime/__init__.py", "tf_runtime/light_tokenizer.py"}
    post = {p for p in models["postprocessing"] if p.startswith("tf_runtime/")}
    assert post == pre | {"tf_runtime/detok.py"}


# Imports model.py as Triton's stub does, then every vendored module, in an interpreter whose path starts with
# the model directory; the engine package of the venv is not importable under the vendored names.
_IMPORT_ALL = """
import importlib, importlib.util, json, sys
model_dir, backend_dir, modules = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path.insert(0, backend_dir)
spec = importlib.util.spec_from_file_location("model", model_dir + "/model.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
assert hasattr(module, "TritonPythonModel")
for name in modules:
    importlib.import_module(name)
    assert sys.modules[name].__file__.startswith(model_dir), (name, sys.modules[name].__file__)
"""


def _backend_dir() -> Path:
    spec = importlib.util.find_spec("pytriton")
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).parent / "tritonserver" / "backends" / "python"
    assert (path / "triton_python_backend_utils.py").is_file()
    return path


def test_every_model_directory_imports_with_only_its_vendored_files(tmp_path: Path) -> None:
    seen: set[tuple[tuple[str, bytes], ...]] = set()
    for name in EXAMPLE_NAMES:
        for model, inside in _python_models(_emit(name, tmp_path)).items():
            key = tuple(sorted(inside.items()))
            if key in seen:
                continue
            seen.add(key)
            target = tmp_path / "models" / f"{len(seen)}-{model}"
            for rel, data in inside.items():
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                (target / rel).write_bytes(data)
            modules = sorted(_module_name(p) for p in inside if p.split("/")[0] in VENDORED)
            result = subprocess.run(
                [sys.executable, "-c", _IMPORT_ALL, str(target), str(_backend_dir()), json.dumps(modules)],
                capture_output=True,
                text=True,
                cwd=tmp_path,
                env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
            )
            assert result.returncode == 0, f"{name}/{model}: {result.stderr[-2000:]}"
    assert len(seen) >= 5
