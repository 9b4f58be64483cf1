"""Type-check tritonforge with mypy: the package, and the code that runs inside Triton.

setuptools maps the package's folders (`builder/`, `ensembles/`, ...) under `tritonforge.` (pyproject's
package-dir), which mypy cannot follow; so the package is seen through a tree of links in build/typecheck.
The Triton models are a second run with model_repo_templates/ as the import root, as inside Triton, where
a model's folder (holding its vendored `tf_runtime`, `tf_policy`) is on sys.path. Exit status: mypy's.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("builder", "ensembles", "loadtest", "model_repo_templates")


def _package_tree() -> Path:
    tree = ROOT / "build" / "typecheck"
    pkg = tree / "tritonforge"
    pkg.mkdir(parents=True, exist_ok=True)
    wanted = {p.name: p for p in (ROOT / "tritonforge").glob("*.py")} | {f: ROOT / f for f in FOLDERS}
    for link in pkg.iterdir():
        if link.name not in wanted:
            link.unlink()
    for name, target in wanted.items():
        link = pkg / name
        if not (link.is_symlink() and Path(os.readlink(link)) == target):
            if link.is_symlink():
                link.unlink()
            link.symlink_to(target)
    return tree


def _run(args: list[str], prefix: str) -> int:
    """Run mypy; the paths it prints relative to the repository root."""
    out, err, status = api.run(args)
    for line in (out + err).splitlines():
        if re.match(r"\S+\.py:\d+", line):
            line = prefix + re.sub(
                r"^tritonforge/(?=(builder|ensembles|loadtest|model_repo_templates)/)", "", line
            )
        print(line)
    return status


def main() -> int:
    tree = _package_tree()
    common = [
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(ROOT / "build" / "mypy-cache"),
    ]
    os.chdir(tree)
    status = _run([*common, "-p", "tritonforge", "--exclude", "model_repo_templates/models/"], "")
    # The vendored packages were checked above as part of tritonforge; here the models, importing them by
    # the names they have inside Triton.
    os.chdir(ROOT / "model_repo_templates")
    os.environ["MYPYPATH"] = str(ROOT / "model_repo_templates")
    models = sorted(str(p) for p in Path("models").glob("*.py"))
    status = max(status, _run([*common, *models], "model_repo_templates/"))
    return status


if __name__ == "__main__":
    sys.exit(main())
