"""Resumable, content-addressed build steps.

A step has a key: the SHA-256 of everything that determines its output (parameters, input content
hashes, tool versions). Its output directory holds a stamp file written last; when the stamp's key
equals the new key and every recorded output file is still there with its size, the step is skipped
("cached"). Otherwise it runs into a temporary sibling directory that is renamed into place only on
success, so an interrupted build never leaves a half result that looks done.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tritonforge.builder.atomic import replace_dir

STAMP = ".tritonforge-step.json"
HASH_CACHE = ".tritonforge-hash-cache.json"
CHUNK = 8 * 1024 * 1024


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def step_key(inputs: dict) -> str:
    return hashlib.sha256(canonical(inputs).encode()).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class HashCache:
    """sha256 of files keyed by (path, size, mtime_ns), so multi-GB checkpoints are hashed once."""

    def __init__(self, path: Path | None):
        self.path = path
        self.data: dict[str, dict] = {}
        if path is not None and path.is_file():
            try:
                self.data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                self.data = {}

    def file(self, p: Path) -> str:
        st = p.stat()
        key = str(p.resolve())
        hit = self.data.get(key)
        if hit and hit["size"] == st.st_size and hit["mtime_ns"] == st.st_mtime_ns:
            return hit["sha256"]
        digest = sha256_file(p)
        self.data[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        return digest

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)


def tree_files(root: Path, names: list[str] | None = None) -> list[Path]:
    """Files under `root` (or only the given names), sorted, stamps and caches excluded."""
    if names is not None:
        return [root / n for n in names if (root / n).is_file()]
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.name not in (STAMP, HASH_CACHE) and "__pycache__" not in p.parts
    )


def hash_tree(root: Path, cache: HashCache | None = None, names: list[str] | None = None) -> dict[str, str]:
    """{relative path: sha256} of the files of a directory."""
    cache = cache or HashCache(None)
    return {p.relative_to(root).as_posix(): cache.file(p) for p in tree_files(root, names)}


def tree_digest(files: dict[str, str]) -> str:
    return hashlib.sha256(canonical(files).encode()).hexdigest()


@dataclass
class StepResult:
    """What one step did: the unit of the build manifest's `steps` lists."""

    name: str
    tier: str
    status: str  # built | cached | skipped | failed | planned
    key: str
    output_dir: str | None
    command: list[str] | None = None
    reason: str = ""
    started: str | None = None
    duration_s: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _stamp(out_dir: Path) -> dict | None:
    p = out_dir / STAMP
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _outputs_intact(out_dir: Path, stamp: dict) -> bool:
    sizes = stamp.get("sizes", {})
    for rel in stamp.get("outputs", {}):
        p = out_dir / rel
        if not p.is_file() or (rel in sizes and p.stat().st_size != sizes[rel]):
            return False
    return True


def cached_result(name: str, tier: str, key: str, out_dir: Path) -> StepResult | None:
    """The recorded result when `out_dir` holds a complete output made from the same key."""
    st = _stamp(out_dir)
    if st is None or st.get("key") != key or not _outputs_intact(out_dir, st):
        return None
    return StepResult(
        name,
        tier,
        "cached",
        key,
        str(out_dir),
        st.get("command"),
        "inputs unchanged",
        st.get("started"),
        0.0,
        st.get("outputs", {}),
        st.get("details", {}),
    )


def run_step(
    name: str,
    tier: str,
    key: str,
    out_dir: Path,
    action: Callable[[Path], dict],
    command: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
    cache: HashCache | None = None,
) -> StepResult:
    """Run `action(tmp_dir) -> details` unless cached; publish `tmp_dir` as `out_dir` on success.

    An action that returns {"failed": [...reasons]} leaves nothing behind and yields status "failed".
    """
    hit = cached_result(name, tier, key, out_dir)
    if hit is not None:
        if progress:
            progress(f"{tier}: {name}: cached (inputs unchanged)")
        return hit
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out_dir.name}-", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700; servers in containers must read the output
    started, t0 = now_iso(), time.time()
    try:
        details = action(tmp) or {}
        if details.get("failed"):
            shutil.rmtree(tmp, ignore_errors=True)
            return StepResult(
                name,
                tier,
                "failed",
                key,
                None,
                command,
                "; ".join(details["failed"]),
                started,
                round(time.time() - t0, 2),
                {},
                details,
            )
        files = tree_files(tmp)
        outputs = {p.relative_to(tmp).as_posix(): (cache.file(p) if cache else sha256_file(p)) for p in files}
        sizes = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in files}
        duration = round(time.time() - t0, 2)
        stamp = {
            "key": key,
            "name": name,
            "tier": tier,
            "command": command,
            "started": started,
            "duration_s": duration,
            "outputs": outputs,
            "sizes": sizes,
            "details": details,
        }
        (tmp / STAMP).write_text(json.dumps(stamp, indent=2, sort_keys=True, default=str), encoding="utf-8")
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return StepResult(
        name, tier, "built", key, str(out_dir), command, "", started, duration, outputs, details
    )


def _publish(tmp: Path, out_dir: Path) -> None:
    """Rename `tmp` to `out_dir`, replacing an older output only after the new one is complete."""
    replace_dir(tmp, out_dir)


def stderr_progress(prefix: str = "tritonforge build") -> Callable[[str], None]:
    def emit(msg: str) -> None:
        print(f"[{prefix}] {msg}", file=sys.stderr, flush=True)

    return emit
