"""What was measured: server, model, repository lock, engine manifest, load generator, command line."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tritonforge
from tritonforge.errors import UserError

LOCK_FILE = "tritonforge.lock.json"
MANIFEST_FILE = "build_manifest.json"


def get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """(HTTP status, parsed JSON or text) of a GET; raises URLError/OSError when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (user-given URL)
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    try:
        return status, json.loads(body or b"null")
    except ValueError:
        return status, body.decode("utf-8", errors="replace")


def _post_json(url: str, timeout: float = 5.0) -> Any:
    req = urllib.request.Request(url, data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310
        return json.loads(r.read() or b"null")


def preflight(url: str, model: str) -> dict[str, Any]:
    """Check the server answers and `model` is ready; return server and model metadata.

    Raises a one-line `UserError` for an unreachable server or an unknown / unready model.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"invalid --url {url!r}: give Triton's HTTP endpoint, e.g. http://127.0.0.1:8000")
    try:
        status, server = get_json(f"{url}/v2")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(
            f"cannot reach Triton at {url} ({reason}); start it (`tritonforge serve REPO`) or fix --url"
        ) from None
    if status != 200 or not isinstance(server, dict):
        raise UserError(
            f"{url}/v2 answered HTTP {status}; is --url Triton's HTTP endpoint (default port 8000)?"
        )
    status, _ = get_json(f"{url}/v2/models/{model}/ready")
    if status != 200:
        _, meta = get_json(f"{url}/v2/models/{model}")
        why = meta.get("error") if isinstance(meta, dict) else None
        try:
            index = _post_json(f"{url}/v2/repository/index")
            ready = sorted(m["name"] for m in index if m.get("state") == "READY")
        except (urllib.error.URLError, OSError, ValueError, TypeError, KeyError):
            ready = []
        have = f"; ready models: {', '.join(ready)}" if ready else ""
        raise UserError(
            f"model {model!r} is not ready on {url} ({why or f'HTTP {status}'}){have}; pass --model NAME"
        )
    _, meta = get_json(f"{url}/v2/models/{model}")
    _, config = get_json(f"{url}/v2/models/{model}/config")
    return {
        "server": server,
        "model_metadata": meta,
        "model_config": config if isinstance(config, dict) else {},
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def repo_info(repo: str | None, build_dir: str | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(lock/manifest fingerprint, the spec stored in the lock or None)."""
    out: dict[str, Any] = {}
    spec = None
    if repo:
        lock_path = Path(repo) / LOCK_FILE
        if not lock_path.is_file():
            raise UserError(
                f"--repo {repo!r} has no {LOCK_FILE}; pass a repository made by `tritonforge emit`"
            )
        try:
            lock = json.loads(lock_path.read_text(encoding="utf-8"))
        except ValueError:
            raise UserError(f"{lock_path} is not valid JSON; re-run `tritonforge emit`") from None
        out.update(
            repo=str(Path(repo).resolve()),
            lock_sha256=_sha256(lock_path),
            spec_name=lock.get("spec_name"),
            spec_hash=lock.get("spec_hash"),
            entry_model=lock.get("entry_model"),
            repo_tritonforge_version=lock.get("tritonforge_version"),
        )
        spec = lock.get("spec")
        if build_dir is None and lock.get("spec_name"):
            default = Path("build") / str(lock["spec_name"])
            build_dir = str(default) if (default / MANIFEST_FILE).is_file() else None
    if build_dir:
        manifest = Path(build_dir) / MANIFEST_FILE
        if manifest.is_file():
            out["engine_manifest"] = str(manifest.resolve())
            out["engine_manifest_sha256"] = _sha256(manifest)
        else:
            out["engine_manifest_note"] = f"no {MANIFEST_FILE} in {build_dir}"
    return out, spec


def model_summary(pre: dict[str, Any]) -> dict[str, Any]:
    """The parts of the model's metadata and config that change performance."""
    cfg = pre.get("model_config") or {}
    meta = pre.get("model_metadata") or {}
    steps = (cfg.get("ensemble_scheduling") or {}).get("step") or []
    return {
        "name": meta.get("name"),
        "versions": meta.get("versions"),
        "platform": meta.get("platform") or cfg.get("platform") or cfg.get("backend"),
        "max_batch_size": cfg.get("max_batch_size"),
        "decoupled": (cfg.get("model_transaction_policy") or {}).get("decoupled"),
        "instance_group": cfg.get("instance_group"),
        "dynamic_batching": "dynamic_batching" in cfg,
        "ensemble_steps": [s.get("model_name") for s in steps],
        "outputs": [o.get("name") for o in meta.get("outputs") or []],
    }


def _version(dist: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001
        return None


def environment(
    pre: dict[str, Any], repo: dict[str, Any], argv: list[str], extra: dict[str, Any]
) -> dict[str, Any]:
    server = pre.get("server") or {}
    return {
        "tritonforge_version": tritonforge.__version__,
        "triton": {
            "name": server.get("name"),
            "version": server.get("version"),
            "extensions": server.get("extensions"),
        },
        "model": model_summary(pre),
        "repository": repo,
        "load_generator": {
            "host": socket.gethostname(),
            "cpus": os.cpu_count(),
            # 1/5/15-minute load averages when the report is written: a busy host slows a CPU server
            "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "locust": _version("locust"),
            "tritonclient": _version("tritonclient"),
        },
        "command_line": argv,
        **extra,
    }
