"""Render a `RepositoryPlan` into files, and write them atomically.

`render_repository` is deterministic: the same spec gives byte-identical files. Every template is
rendered with `StrictUndefined`, and the output is checked for anything left unfilled.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import shutil
from pathlib import Path

import jinja2

import tritonforge
import tritonforge.model_repo_templates as _templates
from tritonforge.builder.atomic import replace_dir
from tritonforge.builder.spec import DeploymentSpec, Runtime, Tier
from tritonforge.ensembles.wiring import ModelPlan, RepositoryPlan, TierPaths, plan_repository
from tritonforge.errors import UserError

LOCK_FILE = "tritonforge.lock.json"
# Computed from the package, so it holds for an editable install and for a wheel alike.
TEMPLATES_DIR = Path(_templates.__file__).resolve().parent
VENDOR_NAMES = {"runtime": "tf_runtime", "ensembles.policy": "tf_policy"}
LEFTOVER_MARKERS = ("{{", "{%", "{#", "${")


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _vendor_dir(package: str) -> Path:
    mod = importlib.import_module(f"tritonforge.{package}")
    return Path(mod.__file__).resolve().parent


@functools.cache
def _vendor_files(package: str) -> tuple[tuple[str, bytes], ...]:
    """The .py files of a tritonforge subpackage (path relative to it, bytes), read once per process:
    the same package is vendored into several models of one repository."""
    root = _vendor_dir(package)
    return tuple(
        (path.relative_to(root).as_posix(), path.read_bytes())
        for path in sorted(root.rglob("*.py"))
        if "__pycache__" not in path.parts
    )


def _render(env: jinja2.Environment, template: str, values: dict, where: str) -> str:
    try:
        text = env.get_template(template).render(**values)
    except jinja2.UndefinedError as exc:
        raise UserError(f"{where}: template {template} needs a value that was not given ({exc})") from None
    except jinja2.TemplateNotFound:
        raise UserError(f"{where}: template {template} is missing from the installation; reinstall tritonforge") from None
    return text


def render_model(env: jinja2.Environment, model: ModelPlan) -> dict[str, bytes]:
    """Files of one model directory, keyed by path relative to the repository."""
    files: dict[str, bytes] = {}
    files[f"{model.name}/config.pbtxt"] = _render(env, model.config_template, model.values, model.name).encode()
    version_dir = f"{model.name}/1"
    if model.model_py_template:
        files[f"{version_dir}/model.py"] = _render(env, model.model_py_template, {}, model.name).encode()
    else:
        files[f"{version_dir}/.gitkeep"] = b""
    for package in model.vendor:
        target = VENDOR_NAMES[package]
        for rel, data in _vendor_files(package):
            files[f"{version_dir}/{target}/{rel}"] = data
    for rel, source in sorted(model.extra_files.items()):
        src = Path(source)
        if not src.is_file():
            raise UserError(f"{model.name}: file {source!r} not found; check the spec path (e.g. router.classifier_path)")
        files[f"{version_dir}/{rel}"] = src.read_bytes()
    return files


def check_no_leftovers(files: dict[str, bytes]) -> None:
    """Refuse output with an unfilled placeholder (the anchor's `${...}` failure mode, #250)."""
    for path, data in files.items():
        if not path.endswith((".pbtxt", ".txt", ".json")):
            continue
        text = data.decode("utf-8", errors="replace")
        for marker in LEFTOVER_MARKERS:
            if marker in text:
                raise UserError(f"{path}: contains an unfilled placeholder {marker!r}; this is a tritonforge bug, please report it")


def render_repository(spec: DeploymentSpec, plan: RepositoryPlan, spec_text: str | None = None) -> dict[str, bytes]:
    """All files of the repository (models, vendored code, requirements.txt, lock file)."""
    env = _environment()
    files: dict[str, bytes] = {}
    requirements: set[str] = set()
    for model in plan.models:
        files.update(render_model(env, model))
        requirements.update(model.requirements)
    files["requirements.txt"] = (
        "# What the Python models of this repository import (the NGC trtllm container has them).\n"
        + "".join(f"{r}\n" for r in sorted(requirements))
    ).encode()
    check_no_leftovers(files)
    lock = {
        "tritonforge_version": tritonforge.__version__,
        "spec_name": spec.name,
        "spec_hash": spec.spec_hash(),
        "spec": spec.model_dump(mode="json"),
        "entry_model": plan.entry_model,
        "tiers": [
            {"tier": t.tier, "entry": t.entry, "ensemble": t.ensemble, "engine": t.engine, "streaming": t.streaming}
            for t in plan.tiers
        ],
        "files": {p: hashlib.sha256(d).hexdigest() for p, d in sorted(files.items())},
    }
    files[LOCK_FILE] = (json.dumps(lock, indent=2, sort_keys=True) + "\n").encode()
    return files


def resolve_builtin(ref: str) -> str:
    """`builtin:demo` and friends -> a local checkpoint dir (made offline and cached on first use)."""
    from tritonforge.runtime import demo_model  # heavy imports (torch) only when needed

    return str(demo_model.materialize(ref.split(":", 1)[1]))


def _local_dir(ref: str, base: Path, what: str, tier: Tier) -> str:
    if ref.startswith("builtin:"):
        return resolve_builtin(ref)
    p = Path(ref).expanduser()
    if not p.is_absolute():
        p = (base / p).resolve()
    if not (p / "config.json").is_file():
        raise UserError(
            f"tiers.{tier.name}.{what}: {ref!r} is not a Hugging Face checkpoint directory (no config.json); "
            "give a local checkpoint path or builtin:demo"
        )
    return str(p)


def _built_path(built: bool, path: str | None, placeholder: str) -> str:
    """A built artifact's absolute path, else where the serving host is expected to have it."""
    return str(Path(path).resolve()) if built and path else placeholder


def resolve_tier_paths(spec: DeploymentSpec, spec_dir: Path, build_dir: Path | None = None) -> dict[str, TierPaths]:
    """Each tier's local directories (builtin models materialized); GPU tiers from the build manifest
    when one exists, else from the plan (engine dirs then are placeholders on the serving host)."""
    out: dict[str, TierPaths] = {}
    artifacts = None
    if any(t.runtime == Runtime.trtllm_engine for t in spec.tiers):
        from tritonforge.builder.manifest import deployment_artifacts

        artifacts = deployment_artifacts(spec, build_dir)
    for tier in spec.tiers:
        if tier.runtime == Runtime.cpu_reference:
            model_dir = _local_dir(tier.model, spec_dir, "model", tier)
            tok = _local_dir(tier.tokenizer, spec_dir, "tokenizer", tier) if tier.tokenizer else model_dir
            draft = _local_dir(tier.draft.model, spec_dir, "draft.model", tier) if tier.draft else None
            out[tier.name] = TierPaths(model_dir, tok, draft)
            continue
        assert artifacts is not None
        a = artifacts[tier.name]

        engine = tier.engine_dir or _built_path(a.built, a.engine_dir, f"/engines/{tier.name}/engine")
        draft = _built_path(a.built, a.draft_engine_dir, f"/engines/{tier.name}/draft_engine") if tier.draft else None
        tokenizer = tier.tokenizer or _built_path(a.built, a.tokenizer_dir, "") or tier.model
        out[tier.name] = TierPaths(
            engine,
            tokenizer,
            draft,
            engine_limits={"max_batch_size": a.max_batch_size, "max_input_len": a.max_input_len,
                           "max_seq_len": a.max_seq_len, "max_num_tokens": a.max_num_tokens},
            kv_fraction=a.kv_cache_free_gpu_mem_fraction,
            draft_kv_fraction=a.draft_kv_cache_free_gpu_mem_fraction,
            enable_kv_cache_reuse=a.enable_kv_cache_reuse,
        )
    return out


def emit_files(spec: DeploymentSpec, spec_dir: Path, build_dir: Path | None = None) -> tuple[dict[str, bytes], RepositoryPlan]:
    paths = resolve_tier_paths(spec, spec_dir, build_dir)
    plan = plan_repository(spec, paths, tritonforge.__version__)
    return render_repository(spec, plan), plan


def _is_ours(out: Path) -> bool:
    return (out / LOCK_FILE).is_file()


def write_repository(files: dict[str, bytes], out: Path, force: bool = False) -> None:
    """Write into a temporary sibling, then rename: an interrupted emit leaves nothing half-written."""
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory; choose another -o path")
    if out.is_dir() and any(out.iterdir()) and not _is_ours(out) and not force:
        raise UserError(f"{out} is not empty and was not made by tritonforge; pass --force to replace it or choose another -o path")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for rel, data in sorted(files.items()):
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
