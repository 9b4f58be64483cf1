"""The Triton Python models are plain Python, copied as they are into `<model>/1/model.py`: each compiles,
has no template markers, and starts with the same prologue (after its docstring) that puts the paths
`tritonforge serve` passes and the model's own folder (its vendored packages) on sys.path."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "model_repo_templates"
MODELS = sorted((TEMPLATES / "models").glob("*.py"))
VENDORED = ("tf_common", "tf_policy", "tf_runtime")
MARKERS = ("{{", "{%", "{#")

PROLOGUE = """import faulthandler
import os
import sys

# Outside an NGC container tritonforge serves with the CPU Triton of nvidia-pytriton, whose Python stub
# ignores PYTHONPATH; `tritonforge serve` passes the interpreter's paths here instead (unset: no effect).
# The model's own folder comes first: it holds the packages vendored beside this file (tf_runtime, ...).
sys.path[0:0] = [
    p for p in os.environ.get("TRITONFORGE_PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path
]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# A crash of this model's process (the Python backend stub) prints every thread's Python stack to Triton's log.
faulthandler.enable()
"""


def _after_docstring(path: Path) -> str:
    """A model's text after its module docstring (leading blank lines dropped)."""
    text = path.read_text()
    tree = ast.parse(text, str(path))
    first = tree.body[0]
    assert isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant), f"{path.name}: no docstring"
    assert isinstance(first.value.value, str) and first.end_lineno is not None
    rest = "".join(text.splitlines(keepends=True)[first.end_lineno :])
    return rest.lstrip("\n")


def test_every_model_is_found() -> None:
    names = {p.stem for p in MODELS}
    assert {"llm", "preprocessing", "postprocessing", "speculative_bls", "tensorrt_llm_cpu"} <= names


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_model_compiles_without_template_markers(path: Path) -> None:
    text = path.read_text()
    compile(text, str(path), "exec")
    assert not [m for m in MARKERS if m in text], f"{path.name} is copied as it is: no template markers"


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_model_starts_with_the_prologue(path: Path) -> None:
    """The docstring is the first statement and the prologue the next, so nothing is imported before it."""
    assert _after_docstring(path).startswith(PROLOGUE + "\n"), (
        f"{path.name}: the prologue must follow the docstring"
    )


def test_prologue_comment_appears_once_per_model() -> None:
    for path in MODELS:
        text = path.read_text()
        assert text.count("TRITONFORGE_PYTHONPATH") == 1, path.name
        assert text.count("ignores PYTHONPATH") == 1, path.name


def test_no_python_template_without_template_values() -> None:
    """A `.py.j2` with nothing to fill is plain Python under the wrong name: it belongs in models/*.py."""
    plain = [p for p in TEMPLATES.rglob("*.py.j2") if not any(m in p.read_text() for m in MARKERS[:2])]
    assert plain == []


def test_nothing_that_runs_inside_triton_imports_tritonforge() -> None:
    """The models and the vendored packages run inside Triton, where tritonforge is not installed."""
    paths = MODELS + [p for pkg in VENDORED for p in sorted((TEMPLATES / pkg).rglob("*.py"))]
    assert any(p.parent.name == "tf_common" for p in paths)
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            assert not [n for n in names if n.split(".")[0] == "tritonforge"], f"{path}:{node.lineno}"
