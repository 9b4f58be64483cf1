"""The house: which folder may import which, so a spec moves forward through the folders, never back.

Layers, lowest first: `tritonforge.errors` / `tritonforge.paths` (shared by all) -> `model_repo_templates` (what
runs inside Triton, vendored into the repository: imports nothing of tritonforge) -> `builder` (spec, plan, build)
-> `ensembles` (the repository as a whole: wiring, render, validate, serve, deploy) -> `loadtest` -> the CLI
(`tritonforge.cli`, `tritonforge.smoke`). Every import counts, also those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"model_repo_templates": 1, "builder": 2, "ensembles": 3, "loadtest": 4}
BASE = {"tritonforge.errors", "tritonforge.paths", "tritonforge"}  # `tritonforge` itself: __version__ only
TOP = {"tritonforge.cli", "tritonforge.smoke", "tritonforge.__main__"}


def _node(module: str) -> str | None:
    """The folder (or root module) an absolute `tritonforge...` import belongs to."""
    parts = module.split(".")
    if parts[0] != "tritonforge":
        return None
    if len(parts) > 1 and parts[1] in FOLDERS:
        return parts[1]
    return ".".join(parts[:2])


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    sources = [(f, p) for f in FOLDERS for p in (ROOT / f).rglob("*.py")]
    sources += [(f"tritonforge.{p.stem}", p) for p in (ROOT / "tritonforge").glob("*.py")]
    for owner, path in sources:
        if "__pycache__" in path.parts:
            continue
        for mod in _imports(path):
            target = _node(mod)
            if target and target != owner and not (target == "tritonforge" and mod != "tritonforge"):
                edges.setdefault(owner, set()).add(target)
    return edges


def _rank(node: str) -> int:
    if node in BASE:
        return 0
    if node in TOP:
        return 9
    return FOLDERS[node]


def test_every_import_goes_down_the_layers() -> None:
    back = sorted(
        f"{a} -> {b}"
        for a, targets in _edges().items()
        for b in targets
        if _rank(b) >= _rank(a) and a not in TOP
    )
    assert back == [], "imports against the layers: " + ", ".join(back)


def test_no_cycle_between_top_level_packages() -> None:
    edges = _edges()
    seen: set[str] = set()
    path: list[str] = []

    def visit(n: str) -> None:
        if n in path:
            pytest.fail("import cycle: " + " -> ".join([*path[path.index(n) :], n]))
        if n in seen:
            return
        path.append(n)
        for m in sorted(edges.get(n, ())):
            visit(m)
        path.pop()
        seen.add(n)

    for n in sorted(edges):
        visit(n)


def test_code_that_runs_inside_triton_imports_nothing_of_tritonforge() -> None:
    for path in (ROOT / "model_repo_templates").rglob("*.py"):
        if path.name == "__init__.py" and path.parent.name == "model_repo_templates":
            continue
        assert not any(m.split(".")[0] == "tritonforge" for m in _imports(path)), path


def test_the_checker_sees_a_back_import(tmp_path: Path) -> None:
    """The walk counts imports inside functions, the way lazy imports are written here."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from tritonforge.ensembles.render import emit_files\n")
    assert "tritonforge.ensembles.render" in _imports(f)
    assert _node("tritonforge.ensembles.render") == "ensembles"
