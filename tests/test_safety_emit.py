"""emit never deletes what tritonforge did not write, validates before publishing, and survives kills and
races: every case runs the real `tritonforge emit` in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLES

ROOT = Path(__file__).resolve().parent.parent
GPU_EXAMPLE = EXAMPLES / "llama3.1-8b-fp8-h100.yaml"  # renders without materializing a model


def _spec(where: Path, name: str = "spec.yaml", **limits: int) -> Path:
    data = yaml.safe_load(GPU_EXAMPLE.read_text())
    data["tiers"][0]["limits"].update(limits)
    where.mkdir(parents=True, exist_ok=True)
    path = where / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tritonforge", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd or ROOT,
        env={**os.environ, **(env or {})},
    )


def _tree(path: Path) -> dict[str, bytes | None]:
    """Every entry under `path` (directories as None), to compare before and after."""
    return {
        p.relative_to(path).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(path.rglob("*"))
    }


def _refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "tritonforge bug" not in proc.stderr
    for w in words:
        assert w in proc.stderr, proc.stderr


def _project(tmp_path: Path) -> Path:
    """A user's project directory: a git repository holding the spec and other work."""
    proj = tmp_path / "project"
    _spec(proj)
    subprocess.run(["git", "init", "-q", str(proj)], check=True)
    (proj / "notes.txt").write_text("my notes")
    (proj / "src").mkdir()
    (proj / "src" / "main.py").write_text("print('hi')\n")
    return proj


def test_force_into_current_directory_touches_nothing(tmp_path: Path) -> None:
    proj = _project(tmp_path)
    before = _tree(proj)
    _refused(_cli("emit", "spec.yaml", "-o", ".", "--force", cwd=proj), "current directory")
    assert _tree(proj) == before and (proj / ".git" / "HEAD").is_file()


def test_force_into_a_parent_of_the_current_directory(tmp_path: Path) -> None:
    proj = _project(tmp_path)
    before = _tree(proj)
    _refused(
        _cli("emit", str(proj / "spec.yaml"), "-o", str(proj), "--force", cwd=proj / "src"),
        "current directory",
    )
    assert _tree(proj) == before


def test_force_into_home_and_root(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("secret")
    spec = _spec(tmp_path / "specs")
    before = _tree(home)
    _refused(_cli("emit", str(spec), "-o", str(home), "--force", env={"HOME": str(home)}), "home directory")
    _refused(
        _cli("emit", str(spec), "-o", "~", "--force", cwd=tmp_path, env={"HOME": str(home)}), "home directory"
    )
    _refused(_cli("emit", str(spec), "-o", "/", "--force", cwd=tmp_path), "filesystem root")
    assert _tree(home) == before


def test_force_into_the_spec_directory(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    spec = _spec(specs)
    (specs / "other.yaml").write_text("name: other\n")
    before = _tree(specs)
    _refused(_cli("emit", str(spec), "-o", str(specs), "--force", cwd=tmp_path), "holds the spec")
    _refused(
        _cli("emit", str(spec), "-o", str(tmp_path), "--force", cwd=tmp_path / "specs"), "current directory"
    )
    assert _tree(specs) == before


def test_force_into_a_foreign_directory(tmp_path: Path) -> None:
    """The `-o /tmp --force` case: a shared directory full of other people's files."""
    shared = tmp_path / "shared"
    (shared / "someone").mkdir(parents=True)
    (shared / "someone" / "work.db").write_bytes(b"\x00data")
    (shared / "x.sock.txt").write_text("x")
    spec = _spec(tmp_path / "specs")
    before = _tree(shared)
    _refused(
        _cli("emit", str(spec), "-o", str(shared), "--force"),
        "not written by tritonforge",
        "no tritonforge.lock.json",
    )
    assert _tree(shared) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared", "specs"]  # no temp or lock sibling left


@pytest.mark.parametrize(
    "lock_text",
    [
        "garbage{",
        json.dumps({"files": {}}),
        json.dumps({"tritonforge_version": "0.1.0", "spec_hash": "x", "files": {"../escape": "0" * 64}}),
    ],
    ids=["garbage", "wrong-schema", "path-escape"],
)
def test_a_bad_lock_file_does_not_make_a_directory_ours(lock_text: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "tritonforge.lock.json").write_text(lock_text)
    (out / "thesis.tex").write_text("chapter 1")
    spec = _spec(tmp_path / "specs")
    before = _tree(out)
    _refused(_cli("emit", str(spec), "-o", str(out), "--force"), "not a valid tritonforge lock file")
    assert _tree(out) == before


def test_inside_an_existing_repository(tmp_path: Path) -> None:
    spec = _spec(tmp_path / "specs")
    repo = tmp_path / "repo"
    assert _cli("emit", str(spec), "-o", str(repo)).returncode == 0
    before = _tree(repo)
    _refused(
        _cli("emit", str(spec), "-o", str(repo / "ensemble" / "nested"), "--force"),
        "inside the tritonforge repository",
    )
    assert _tree(repo) == before


def test_hand_added_files_are_listed_and_kept(tmp_path: Path) -> None:
    spec = _spec(tmp_path / "specs")
    repo = tmp_path / "repo"
    assert _cli("emit", str(spec), "-o", str(repo)).returncode == 0
    (repo / "README.md").write_text("my notes on this deployment")
    (repo / "my_model" / "1").mkdir(parents=True)
    (repo / "my_model" / "config.pbtxt").write_text('name: "my_model"\n')
    before = _tree(repo)
    for force in ([], ["--force"]):
        _refused(
            _cli("emit", str(spec), "-o", str(repo), *force),
            "README.md",
            "my_model/config.pbtxt",
            "did not write",
        )
        assert _tree(repo) == before


def test_edited_files_need_force(tmp_path: Path) -> None:
    spec = _spec(tmp_path / "specs")
    repo, fresh = tmp_path / "repo", tmp_path / "fresh"
    assert _cli("emit", str(spec), "-o", str(repo)).returncode == 0
    assert _cli("emit", str(spec), "-o", str(fresh)).returncode == 0
    cfg = repo / "ensemble" / "config.pbtxt"
    cfg.write_text(cfg.read_text() + "\n# tuned by hand\n")
    before = _tree(repo)
    _refused(_cli("emit", str(spec), "-o", str(repo)), "ensemble/config.pbtxt", "--force")
    assert _tree(repo) == before
    assert _cli("emit", str(spec), "-o", str(repo), "--force").returncode == 0
    assert _tree(repo) == _tree(fresh)  # byte-identical to a fresh emit


def test_bytecode_of_a_served_repository_is_no_obstacle(tmp_path: Path) -> None:
    """A served repository gets __pycache__ next to its Python models; re-emitting replaces it."""
    spec = _spec(tmp_path / "specs")
    repo = tmp_path / "repo"
    assert _cli("emit", str(spec), "-o", str(repo)).returncode == 0
    pyc = repo / "preprocessing" / "1" / "__pycache__" / "model.cpython-311.pyc"
    pyc.parent.mkdir()
    pyc.write_bytes(b"\x00pyc")
    assert _cli("emit", str(spec), "-o", str(repo)).returncode == 0
    assert not pyc.exists()


def test_failed_validation_leaves_the_previous_repository(tmp_path: Path) -> None:
    """An engine built with another batch size fails validation: nothing is published."""
    good = _spec(tmp_path / "specs")
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "config.json").write_text(json.dumps({"build_config": {"max_batch_size": 3}}))
    data = yaml.safe_load(good.read_text())
    data["tiers"][0]["engine_dir"] = str(engine)
    bad = tmp_path / "specs" / "bad.yaml"
    bad.write_text(yaml.safe_dump(data, sort_keys=False))
    repo = tmp_path / "repo"
    assert _cli("emit", str(good), "-o", str(repo)).returncode == 0
    before = _tree(repo)
    proc = _cli("emit", str(bad), "-o", str(repo))
    assert proc.returncode == 2 and "failed validation" in proc.stderr and "left as it was" in proc.stderr
    assert "max_batch_size 256 != engine max_batch_size 3" in proc.stderr
    assert _tree(repo) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine", "repo", "specs"]


# --- kills and races ----------------------------------------------------------------------------------
# A wrapped emit: fs-changing calls are counted (and named on stdout); after the Nth, the process SIGKILLs
# itself, i.e. a kill at exactly that instant. `exchange` is the atomic swap (when the code has one).
WRAPPED = r"""
import os, signal, sys, time
from pathlib import Path
import tritonforge.builder.atomic as atomic
from tritonforge.cli import main
kill_at, mode, ready, go = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
count = [0]
def wrap(mod, name, blocking):
    orig = getattr(mod, name, None)
    if orig is None:
        return
    def f(*a, **k):
        if blocking and ready != "-" and not Path(ready).exists():
            Path(ready).write_text("in")
            while not Path(go).exists():
                time.sleep(0.05)
        out = orig(*a, **k)
        count[0] += 1
        print(f"op {count[0]} {name}", flush=True)
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    setattr(mod, name, f)
if mode == "no-exchange" and hasattr(atomic, "exchange"):
    atomic.exchange = lambda a, b: False
wrap(os, "rename", True)
wrap(atomic, "exchange", True)
wrap(os, "unlink", False)
wrap(os, "rmdir", False)
sys.argv = ["tritonforge", *sys.argv[5:]]
main()
"""


def _wrapped(
    kill_at: int, *args: str, mode: str = "exchange", ready: str = "-", go: str = "-"
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRAPPED, str(kill_at), mode, ready, go, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ},
    )


def _kill_points(ops: list[str]) -> list[int]:
    """After every rename/exchange, and at the start, middle and end of the deletions."""
    swaps = [i + 1 for i, op in enumerate(ops) if op in ("rename", "exchange")]
    deletes = [i + 1 for i, op in enumerate(ops) if op in ("unlink", "rmdir")]
    picks = set(swaps)
    if deletes:
        picks |= {deletes[0], deletes[len(deletes) // 2], deletes[-1]}
    return sorted(picks)


@pytest.mark.parametrize("mode", ["exchange", "no-exchange"])
def test_kill_at_any_instant_leaves_old_or_new(mode: str, tmp_path: Path) -> None:
    spec_old = _spec(tmp_path / "specs", "old.yaml")
    spec_new = _spec(tmp_path / "specs", "new.yaml", max_batch_size=128)
    ref_old, ref_new, repo = tmp_path / "ref_old", tmp_path / "ref_new", tmp_path / "w" / "repo"
    assert _cli("emit", str(spec_old), "-o", str(ref_old)).returncode == 0
    assert _cli("emit", str(spec_new), "-o", str(ref_new)).returncode == 0
    old, new = _tree(ref_old), _tree(ref_new)
    assert old != new
    assert _cli("emit", str(spec_old), "-o", str(repo)).returncode == 0
    dry = _wrapped(0, "emit", str(spec_new), "-o", str(repo), mode=mode)
    out, err = dry.communicate(timeout=120)
    assert dry.returncode == 0, err
    ops = [line.split()[2] for line in out.splitlines() if line.startswith("op ")]
    points = _kill_points(ops)
    assert points
    for k in points:
        assert _cli("emit", str(spec_old), "-o", str(repo)).returncode == 0
        proc = _wrapped(k, "emit", str(spec_new), "-o", str(repo), mode=mode)
        proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL, k
        if mode == "exchange":  # the atomic swap: the target is never missing
            assert repo.is_dir() and _tree(repo) in (old, new), f"killed after op {k} ({ops[k - 1]})"
        # The next run recovers and removes whatever the kill left, and nothing else.
        after = _cli("emit", str(spec_new), "-o", str(repo))
        assert after.returncode == 0, (k, after.stderr)
        assert _tree(repo) == new
        assert sorted(p.name for p in repo.parent.iterdir()) == ["repo"], k


def test_recovery_restores_the_previous_repository(tmp_path: Path) -> None:
    """Without an atomic swap, a kill between the two renames leaves the backup; the next run puts it
    back, even when that run itself then fails."""
    spec_old = _spec(tmp_path / "specs", "old.yaml")
    spec_new = _spec(tmp_path / "specs", "new.yaml", max_batch_size=128)
    repo = tmp_path / "w" / "repo"
    assert _cli("emit", str(spec_old), "-o", str(repo)).returncode == 0
    old = _tree(repo)
    dry = _wrapped(0, "emit", str(spec_new), "-o", str(repo), mode="no-exchange")
    out, _ = dry.communicate(timeout=120)
    ops = [line.split()[2] for line in out.splitlines() if line.startswith("op ")]
    assert _cli("emit", str(spec_old), "-o", str(repo)).returncode == 0
    first_rename = ops.index("rename") + 1  # out -> backup; the new one is not in place yet
    proc = _wrapped(first_rename, "emit", str(spec_new), "-o", str(repo), mode="no-exchange")
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL and not repo.exists()
    missing = _cli("emit", "no-such-spec.yaml", "-o", str(repo))
    assert missing.returncode == 2 and not repo.exists()  # a bad spec fails before touching the target
    foreign = tmp_path / "w" / ".repo.tritonforge-tmp-foreign"
    foreign.mkdir()
    (foreign / "data.bin").write_bytes(b"not ours")
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "config.json").write_text(json.dumps({"build_config": {"max_batch_size": 3}}))
    data = yaml.safe_load(spec_new.read_text())
    data["tiers"][0]["engine_dir"] = str(engine)
    bad = tmp_path / "specs" / "bad.yaml"
    bad.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = _cli("emit", str(bad), "-o", str(repo))
    assert proc.returncode == 2 and "failed validation" in proc.stderr
    assert _tree(repo) == old  # recovered, then left as it was
    # Our leftovers are gone; a look-alike holding someone else's file is kept.
    assert sorted(p.name for p in repo.parent.iterdir()) == [".repo.tritonforge-tmp-foreign", "repo"]
    assert (foreign / "data.bin").read_bytes() == b"not ours"


def test_two_emits_to_one_target(tmp_path: Path) -> None:
    """The first holds the target; the second says so in one line and changes nothing."""
    spec_a = _spec(tmp_path / "specs", "a.yaml")
    spec_b = _spec(tmp_path / "specs", "b.yaml", max_batch_size=128)
    repo, ref_b = tmp_path / "w" / "repo", tmp_path / "ref_b"
    assert _cli("emit", str(spec_a), "-o", str(repo)).returncode == 0
    assert _cli("emit", str(spec_b), "-o", str(ref_b)).returncode == 0
    before = _tree(repo)
    ready, go = tmp_path / "ready", tmp_path / "go"
    first = _wrapped(0, "emit", str(spec_b), "-o", str(repo), ready=str(ready), go=str(go))
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), (
            first.communicate()[1] if first.poll() is not None else "first emit never swapped"
        )
        second = _cli("emit", str(spec_a), "-o", str(repo), "--force")
        _refused(second, "another `tritonforge emit` is writing")
        assert _tree(repo) == before
    finally:
        go.write_text("go")
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert _tree(repo) == _tree(ref_b)
    assert sorted(p.name for p in repo.parent.iterdir()) == ["repo"]
