"""The distribution works as a wheel in a clean virtualenv (templates and vendored code included)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_installs_and_emits(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        cwd=tmp_path,
    )
    wheel = next(dist.glob("tritonforge-*.whl"))
    env_dir = tmp_path / "clean"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    # Install the wheel with this interpreter's pip into the clean env; dependencies come from ours.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
    )
    (site / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # Run outside the checkout: its tritonforge/ folder would shadow the installed package.
    where = subprocess.check_output(
        [
            str(py),
            "-c",
            "import tritonforge, tritonforge.ensembles.render as r; print(tritonforge.__file__); print(r.TEMPLATES_DIR)",
        ],
        text=True,
        cwd=tmp_path,
    )
    assert str(site) in where.split("\n")[0], where
    assert str(site) in where.split("\n")[1], where
    out = tmp_path / "repo"
    proc = subprocess.run(
        [
            str(py),
            "-m",
            "tritonforge",
            "emit",
            str(ROOT / "examples" / "llama3.1-8b-fp8-h100.yaml"),
            "-o",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "preprocessing" / "1" / "model.py").is_file()
    assert (out / "postprocessing" / "1" / "tf_runtime" / "detok.py").is_file()
    assert (out / "tritonforge.lock.json").is_file()
