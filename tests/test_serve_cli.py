"""serve without a server: the NGC container command, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import EXAMPLES
from tritonforge.builder import versions
from tritonforge.builder.spec import load_spec
from tritonforge.ensembles.render import emit_files, write_repository


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tritonforge", *args], capture_output=True, text=True, timeout=60
    )


def test_docker_print(tmp_path: Path) -> None:
    from tests.helpers.builds import fake_build

    example = "llama3.1-8b-fp8-h100.yaml"
    files, _ = emit_files(load_spec(EXAMPLES / example), EXAMPLES, fake_build(example, tmp_path))
    write_repository(files, tmp_path / "repo")
    proc = _cli(
        "serve", str(tmp_path / "repo"), "--docker", versions.TRITON_IMAGE, "--print", "--http-port", "9000"
    )
    assert proc.returncode == 0, proc.stderr
    build, cmd = proc.stdout.strip().splitlines()
    tag = build.split()[5]
    assert build.startswith("docker build --target serve -t tritonforge/llama31-8b-fp8-h100:")
    assert cmd.startswith("docker run") and "'--gpus=\"device=0\"'" in cmd and "--shm-size=2g" in cmd
    assert "-p 127.0.0.1:9000:8000" in cmd and f"{(tmp_path / 'repo').resolve()}:/models" in cmd
    # The backend launcher's MPI leader-mode command (argument by argument: test_gpu_launch_conformance.py).
    assert f"{tag} mpirun --allow-run-as-root -n 1 /opt/tritonserver/bin/tritonserver" in cmd
    assert cmd.endswith("--backend-config=python,shm-region-prefix-name=prefix0_ :")


def test_serve_missing_repo_one_line(tmp_path: Path) -> None:
    proc = _cli("serve", str(tmp_path / "nope"))
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and proc.stderr.count("\n") == 1
    assert "tritonforge emit" in proc.stderr


def test_generate_unreachable_server_one_line() -> None:
    proc = _cli("generate", "hello", "--url", "http://127.0.0.1:9", "--model", "ensemble")
    assert proc.returncode == 2 and "cannot reach Triton" in proc.stderr and "Traceback" not in proc.stderr


def test_usage_error_exit_2() -> None:
    proc = _cli("emit")
    assert proc.returncode == 2 and "Missing argument" in proc.stderr
