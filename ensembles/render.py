"""Render a `RepositoryPlan` into files, and write them atomically.

`render_repository` is deterministic: the same spec gives byte-identical files. Every template is
rendered with `StrictUndefined`, and the output is checked for anything left unfilled.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

import tritonforge
import tritonforge.model_repo_templates as _templates
from tritonforge.builder.atomic import (
    Busy,
    backup_path,
    recover_backup,
    remove_tree,
    replace_dir,
    target_lock,
    temp_prefix,
)
from tritonforge.builder.engine_facts import EngineFacts
from tritonforge.builder.spec import DeploymentSpec, Runtime, Tier
from tritonforge.ensembles.wiring import ModelPlan, RepositoryPlan, TierPaths, plan_repository
from tritonforge.errors import UserError

LOCK_FILE = "tritonforge.lock.json"
# Computed from the package, so it holds for an editable install and for a wheel alike.
TEMPLATES_DIR = Path(_templates.__file__).resolve().parent
LEFTOVER_MARKERS = ("{{", "{%", "{#", "${")


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


# The packages that run inside Triton, vendored beside a model's model.py (folders of model_repo_templates).
VENDORED_PACKAGES = ("tf_common", "tf_policy", "tf_runtime")


def _module_path(module: str) -> str | None:
    """The file (relative to model_repo_templates) of a dotted module name in a vendored package, else None."""
    parts = module.split(".")
    if parts[0] not in VENDORED_PACKAGES:
        return None
    for rel in ("/".join(parts) + ".py", "/".join(parts) + "/__init__.py"):
        if (TEMPLATES_DIR / rel).is_file():
            return rel
    return None


def _imported_modules(source: bytes, rel: str) -> dict[str, bool]:
    """Dotted names a file imports -> whether each must be a module: `import a.b` and `from a import ...`
    need module `a`, while `from a import b` also names `a.b`, a module only when there is such a file.
    Relative imports are resolved, and the whole tree is walked, so imports made inside functions (run
    lazily, inside Triton) count too."""
    package = rel.removesuffix(".py").split("/")[:-1]  # a module's package; an __init__.py is its own
    found: dict[str, bool] = {}
    for node in ast.walk(ast.parse(source, filename=rel)):
        if isinstance(node, ast.Import):
            found.update((alias.name, True) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                if node.level > len(package):
                    raise UserError(f"{rel}: a relative import leaves its package; reinstall tritonforge")
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            found[module] = True
            for alias in node.names:
                if alias.name != "*":
                    found.setdefault(f"{module}.{alias.name}", False)
    return found


@functools.cache
def vendored_files(model_rel: str) -> tuple[tuple[str, bytes], ...]:
    """The vendored files a model needs: the modules of `VENDORED_PACKAGES` its file imports, then those
    these import, transitively, with the `__init__.py` of every package on the way (path relative to
    model_repo_templates, bytes). Read once per process: the same model is emitted for several tiers."""
    needed: dict[str, bytes] = {}
    todo = [(model_rel, (TEMPLATES_DIR / model_rel).read_bytes())]
    while todo:
        rel, source = todo.pop()
        for module, required in sorted(_imported_modules(source, rel).items()):
            parts = module.split(".")
            if parts[0] not in VENDORED_PACKAGES:
                continue
            path = _module_path(module)
            if path is None:
                if not required:
                    continue  # `from pkg.mod import name`: a name pkg.mod defines
                raise UserError(f"{rel} imports {module}, which is missing; reinstall tritonforge")
            for file in [f"{'/'.join(parts[:i])}/__init__.py" for i in range(1, len(parts))] + [path]:
                if file not in needed and (TEMPLATES_DIR / file).is_file():
                    needed[file] = (TEMPLATES_DIR / file).read_bytes()
                    todo.append((file, needed[file]))
    return tuple(sorted(needed.items()))


def _render(env: jinja2.Environment, template: str, values: dict, where: str) -> str:
    try:
        text = env.get_template(template).render(**values)
    except jinja2.UndefinedError as exc:
        raise UserError(f"{where}: template {template} needs a value that was not given ({exc})") from None
    except jinja2.TemplateNotFound:
        raise UserError(
            f"{where}: template {template} is missing from the installation; reinstall tritonforge"
        ) from None
    return text


def _model_file(rel: str, where: str) -> bytes:
    """A Triton Python model, copied as it is (plain Python: no template values)."""
    path = TEMPLATES_DIR / rel
    if not path.is_file():
        raise UserError(f"{where}: {rel} is missing from the installation; reinstall tritonforge")
    return path.read_bytes()


def render_model(env: jinja2.Environment, model: ModelPlan) -> dict[str, bytes]:
    """Files of one model directory, keyed by path relative to the repository."""
    files: dict[str, bytes] = {}
    files[f"{model.name}/config.pbtxt"] = _render(
        env, model.config_template, model.values, model.name
    ).encode()
    version_dir = f"{model.name}/1"
    if model.model_py_template:
        files[f"{version_dir}/model.py"] = _model_file(model.model_py_template, model.name)
        for rel, data in vendored_files(model.model_py_template):
            files[f"{version_dir}/{rel}"] = data
    else:
        files[f"{version_dir}/.gitkeep"] = b""
    for rel, source in sorted(model.extra_files.items()):
        src = Path(source)
        if not src.is_file():
            raise UserError(
                f"{model.name}: file {source!r} not found; check the spec path (e.g. router.classifier_path)"
            )
        files[f"{version_dir}/{rel}"] = src.read_bytes()
    return files


def check_no_leftovers(files: dict[str, bytes]) -> None:
    """Refuse output with an unfilled placeholder (a `${...}` left unfilled, as the backend's `tools/fill_template.py` configs leave them)."""
    for path, data in files.items():
        if not path.endswith((".pbtxt", ".txt", ".json")):
            continue
        text = data.decode("utf-8", errors="replace")
        for marker in LEFTOVER_MARKERS:
            if marker in text:
                raise UserError(
                    f"{path}: contains an unfilled placeholder {marker!r}; this is a tritonforge bug, please report it"
                )


REQUIREMENTS_HEADER = (
    "# What the Python models of this repository import. The NGC trtllm container has numpy, torch, transformers,\n"
    "# tokenizers and safetensors (TensorRT-LLM dependencies), but not redis, hnswlib, sentence-transformers or the\n"
    "# embedding model: the Dockerfile next to this file adds exactly those (`tritonforge serve --docker` builds it).\n"
)


def render_repository(
    spec: DeploymentSpec,
    plan: RepositoryPlan,
    spec_text: str | None = None,
    paths: dict[str, dict] | None = None,
) -> dict[str, bytes]:
    """All files of the repository (models, vendored code, requirements.txt, Dockerfile, lock file).

    `paths`: per tier, where each engine/tokenizer directory came from (`tier_path_sources`); the lock
    file records it, so `serve` can tell an engine that was never built from one that is missing."""
    from tritonforge.ensembles.dockerfile import render_dockerfile

    env = _environment()
    files: dict[str, bytes] = {}
    requirements: set[str] = set()
    for model in plan.models:
        files.update(render_model(env, model))
        requirements.update(model.requirements)
    files["requirements.txt"] = (
        REQUIREMENTS_HEADER + "".join(f"{r}\n" for r in sorted(requirements))
    ).encode()
    files["Dockerfile"] = render_dockerfile(
        files["requirements.txt"].decode(), base_image=spec.triton.image
    ).encode()
    check_no_leftovers(files)
    lock = {
        "tritonforge_version": tritonforge.__version__,
        "spec_name": spec.name,
        "spec_hash": spec.spec_hash(),
        "spec": spec.model_dump(mode="json"),
        "entry_model": plan.entry_model,
        "tiers": [
            {
                "tier": t.tier,
                "entry": t.entry,
                "ensemble": t.ensemble,
                "engine": t.engine,
                "streaming": t.streaming,
            }
            for t in plan.tiers
        ],
        "paths": paths or {},
        "files": {p: hashlib.sha256(d).hexdigest() for p, d in sorted(files.items())},
    }
    files[LOCK_FILE] = (json.dumps(lock, indent=2, sort_keys=True) + "\n").encode()
    return files


def resolve_builtin(ref: str) -> str:
    """`builtin:demo` and friends -> a local checkpoint dir (made offline and cached on first use)."""
    from tritonforge.builder import demo_model  # heavy imports (torch) only when needed

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


def _sourced(built: bool, path: str | None, placeholder: str) -> tuple[str, str]:
    """(path, source): "build" for a built artifact, else the placeholder, marked "placeholder"."""
    return (str(Path(path).resolve()), "build") if built and path else (placeholder, "placeholder")


def _spec_path(ref: str, base: Path) -> str:
    """A directory the spec names, absolute (relative to the spec's directory)."""
    p = Path(ref).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def resolve_tier_paths(
    spec: DeploymentSpec, spec_dir: Path, build_dir: Path | None = None
) -> dict[str, TierPaths]:
    """Each tier's local directories (builtin models materialized); GPU tiers from the build manifest
    when one exists, else from the plan (engine dirs then are placeholders on the serving host)."""
    return resolve_tier_paths_sourced(spec, spec_dir, build_dir)[0]


def resolve_tier_paths_sourced(
    spec: DeploymentSpec, spec_dir: Path, build_dir: Path | None = None
) -> tuple[dict[str, TierPaths], dict[str, dict]]:
    """`resolve_tier_paths`, plus per GPU tier where each directory came from: {"engine_dir": {"path",
    "source"}, ...} with source "build" (the build manifest), "spec" (the tier names it) or "placeholder"
    (not built: the path exists nowhere; `serve` refuses such a repository and names the build command)."""
    out: dict[str, TierPaths] = {}
    sources: dict[str, dict] = {}
    facts: dict[str, EngineFacts] = {}
    if any(t.runtime in (Runtime.trtllm_engine, Runtime.trtllm_pytorch) for t in spec.tiers):
        from tritonforge.builder.engine_facts import deployment_engine_facts

        facts = deployment_engine_facts(spec, build_dir)
    for tier in spec.tiers:
        if tier.runtime == Runtime.cpu_reference:
            model_dir = _local_dir(tier.model, spec_dir, "model", tier)
            tok = _local_dir(tier.tokenizer, spec_dir, "tokenizer", tier) if tier.tokenizer else model_dir
            draft = _local_dir(tier.draft.model, spec_dir, "draft.model", tier) if tier.draft else None
            out[tier.name] = TierPaths(model_dir, tok, draft)
            continue
        a = facts[tier.name]
        if tier.runtime == Runtime.trtllm_pytorch:  # an HF checkpoint for the LLM API, no engine
            out[tier.name], sources[tier.name] = pytorch_tier_paths(tier, a, spec_dir)
            continue

        if tier.engine_dir:
            engine, engine_src = _spec_path(tier.engine_dir, spec_dir), "spec"
        else:
            engine, engine_src = _sourced(a.built, a.engine_dir, f"/engines/{tier.name}/engine")
        draft, draft_src = (
            _sourced(a.built, a.draft_engine_dir, f"/engines/{tier.name}/draft_engine")
            if tier.draft
            else (None, None)
        )
        if tier.tokenizer:
            tokenizer, tok_src = _spec_path(tier.tokenizer, spec_dir), "spec"
        else:
            # Without a build, no tokenizer was copied next to the engine: the checkpoint the build would copy
            # it from is only where the GPU host is expected to have it.
            tokenizer, tok_src = _sourced(a.built, a.tokenizer_dir, f"/engines/{tier.name}/tokenizer")
        sources[tier.name] = {
            "engine_dir": {"path": engine, "source": engine_src},
            "tokenizer_dir": {"path": tokenizer, "source": tok_src},
            **({"draft_engine_dir": {"path": draft, "source": draft_src}} if tier.draft else {}),
        }
        out[tier.name] = TierPaths(engine, tokenizer, draft, engine=a)
    return out, sources


def emit_files(
    spec: DeploymentSpec, spec_dir: Path, build_dir: Path | None = None
) -> tuple[dict[str, bytes], RepositoryPlan]:
    paths, sources = resolve_tier_paths_sourced(spec, spec_dir, build_dir)
    plan = plan_repository(spec, paths, tritonforge.__version__)
    return render_repository(spec, plan, paths=sources), plan


HEX64 = frozenset("0123456789abcdef")


def read_lock(repo: Path) -> dict | None:
    """The repository's lock file when it is a well-formed tritonforge lock, else None."""
    try:
        lock = json.loads((repo / LOCK_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(lock, dict) or not isinstance(lock.get("tritonforge_version"), str):
        return None
    if not isinstance(lock.get("spec_hash"), str) or not isinstance(lock.get("files"), dict):
        return None
    for rel, digest in lock["files"].items():
        parts = rel.split("/")
        if (
            not isinstance(digest, str)
            or len(digest) != 64
            or not set(digest) <= HEX64
            or rel.startswith("/")
            or any(p in ("", ".", "..") for p in parts)
            or rel == LOCK_FILE
        ):
            return None
    return lock


@dataclass
class Ownership:
    """What a directory holds compared with its lock file."""

    lock: dict | None
    extra: list[str] = field(default_factory=list)  # not listed in the lock (hand-added, or not ours at all)
    edited: list[str] = field(default_factory=list)  # listed, but changed or missing
    byproducts: list[str] = field(default_factory=list)  # __pycache__/*.pyc next to our .py files

    @property
    def ours(self) -> bool:
        return self.lock is not None and not self.extra


def _is_byproduct(rel: str, listed: set[str]) -> bool:
    """Python's bytecode cache of a listed .py file (a served repository gets these)."""
    parts = rel.split("/")
    if len(parts) < 2 or parts[-2] != "__pycache__" or not parts[-1].endswith(".pyc"):
        return False
    folder = "/".join(parts[:-2])
    return any(p.endswith(".py") and p.rsplit("/", 1)[0] == folder for p in listed if "/" in p)


def inspect_dir(repo: Path, hashes: bool = True, empty_dirs_ok: bool = False) -> Ownership:
    """Compare every entry under `repo` with its lock file (symlinks, and empty folders unless
    `empty_dirs_ok`, count as extra)."""
    lock = read_lock(repo)
    listed = set(lock["files"]) if lock else set()
    own = Ownership(lock)
    seen: set[str] = set()
    for root, dirs, names in os.walk(repo):
        base = Path(root).relative_to(repo).as_posix()
        prefix = "" if base == "." else base + "/"
        for d in list(dirs):
            if os.path.islink(os.path.join(root, d)):
                own.extra.append(prefix + d)
                dirs.remove(d)
        if not dirs and not names and prefix and not empty_dirs_ok:
            own.extra.append(prefix)
        for name in names:
            rel = prefix + name
            full = os.path.join(root, name)
            if rel == LOCK_FILE and not os.path.islink(full):
                continue
            if rel in listed and not os.path.islink(full) and os.path.isfile(full):
                seen.add(rel)
                if hashes and hashlib.sha256(Path(full).read_bytes()).hexdigest() != lock["files"][rel]:  # type: ignore[index]
                    own.edited.append(rel)
            elif _is_byproduct(rel, listed) and not os.path.islink(full):
                own.byproducts.append(rel)
            else:
                own.extra.append(rel)
    own.edited += sorted(listed - seen)
    own.extra.sort()
    own.edited.sort()
    return own


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _contains(outer: Path, inner: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_target(out: Path, spec_path: Path | None = None) -> None:
    """Refuse paths no repository may replace: /, home, the current directory or a parent of it, a
    directory holding the spec, anything inside another tritonforge repository."""
    root = Path(out.anchor)
    reasons = [
        (out == root, "it is the filesystem root"),
        (_contains(out, Path.home().resolve()), "it is your home directory or a parent of it"),
        (_contains(out, Path.cwd().resolve()), "it is the current directory or a parent of it"),
        (spec_path is not None and _contains(out, spec_path.resolve()), "it holds the spec file"),
    ]
    for hit, why in reasons:
        if hit:
            raise UserError(f"refusing to emit into {out}: {why}; choose a new directory such as ./out/repo")
    for parent in out.parents:
        if (parent / LOCK_FILE).is_file():
            raise UserError(
                f"refusing to emit into {out}: it is inside the tritonforge repository {parent}; "
                "choose a path outside it"
            )


def check_replaceable(out: Path, force: bool) -> Ownership | None:
    """None when `out` is free (absent or empty); its `Ownership` when it is our repository and may
    be replaced; else a `UserError` naming why not. Nothing is changed either way."""
    if not os.path.lexists(out):
        return None
    if not out.is_dir():
        raise UserError(f"{out} exists and is not a directory; choose another -o path")
    if not any(out.iterdir()):
        return None
    own = inspect_dir(out)
    not_ours = (
        "nothing was changed; --force replaces only a repository tritonforge wrote, so move those files "
        "elsewhere or choose another -o path"
    )
    if own.lock is None:
        why = (
            "its tritonforge.lock.json is not a valid tritonforge lock file"
            if (out / LOCK_FILE).exists()
            else "it has no tritonforge.lock.json"
        )
        raise UserError(f"refusing to replace {out}: it was not written by tritonforge ({why}); {not_ours}")
    if own.extra:
        raise UserError(
            f"refusing to replace {out}: it holds {len(own.extra)} file(s) tritonforge did not write "
            f"({_few(own.extra)}); {not_ours}"
        )
    if own.edited and not force:
        raise UserError(
            f"refusing to replace {out}: {len(own.edited)} file(s) changed since tritonforge wrote them "
            f"({_few(own.edited)}); copy them elsewhere, or pass --force to overwrite them"
        )
    return own


def _stale_is_ours(path: Path) -> bool:
    """A leftover temp/backup sibling we may delete: a lock file and nothing it does not list."""
    if path.is_symlink() or not path.is_dir():
        return False
    entries = list(path.iterdir())
    if not entries or [e.name for e in entries] == [LOCK_FILE]:
        return True  # killed before (or while) writing the lock file, which is written first
    return inspect_dir(path, hashes=False, empty_dirs_ok=True).ours  # a removal killed half-way


def clean_stale(out: Path) -> list[Path]:
    """Remove our own leftover temp and backup siblings of `out` (caller holds the lock); return
    those left in place because they hold something we did not write."""
    kept = []
    candidates = [p for p in out.parent.iterdir() if p.name.startswith(temp_prefix(out))]
    if os.path.lexists(out):
        candidates.append(backup_path(out))
    for p in candidates:
        if not os.path.lexists(p):
            continue
        if _stale_is_ours(p):
            remove_tree(p, last=LOCK_FILE)
        else:
            kept.append(p)
    return kept


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_repository(
    files: dict[str, bytes],
    out: Path,
    force: bool = False,
    spec_path: Path | None = None,
    validate: bool = True,
) -> None:
    """Publish `files` as the repository `out`, or change nothing.

    Under a lock on `out`: refuse what we may not replace, write into a temporary sibling, validate it
    there, then swap it in (atomic.replace_dir). A previous run killed half-way is recovered first and its
    leftovers removed. `force` allows overwriting our own repository whose files were edited.
    """
    out = Path(out).expanduser().resolve()  # a quoted "~" means home too, never a directory named ~
    check_target(out, spec_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with target_lock(out):
            recover_backup(out)
            clean_stale(out)
            check_replaceable(out, force)
            tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out), dir=out.parent))
            try:
                os.chmod(tmp, 0o777 & ~_umask())  # as a plain mkdir would; servers in containers read it
                # The lock file first: a temp dir left by a kill then still says it is ours.
                for rel in [LOCK_FILE, *sorted(r for r in files if r != LOCK_FILE)]:
                    dest = tmp / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(files[rel])
                if validate:
                    from tritonforge.ensembles.validate import validate_repository

                    problems = validate_repository(tmp)
                    if problems:
                        raise UserError(
                            f"the rendered repository failed validation, so {out} was left as it was: "
                            f"{problems[0]}; if the spec is right this is a tritonforge bug, please report it"
                        )
                replace_dir(tmp, out, last=LOCK_FILE)
            finally:
                remove_tree(tmp, last=LOCK_FILE)
    except Busy as exc:
        raise UserError(
            f"another `tritonforge emit` is writing {out} right now (lock {exc}); "
            "wait for it to finish, then run this again"
        ) from None


def _checkpoint_ref(ref: str, spec_dir: Path) -> str:
    """A checkpoint the spec names, as a path: builtin models materialized, relative paths from the spec's dir."""
    if ref.startswith("builtin:"):
        return resolve_builtin(ref)
    p = Path(ref).expanduser()
    return str(p if p.is_absolute() else (spec_dir / p).resolve())


def pytorch_tier_paths(tier: Tier, a: EngineFacts, spec_dir: Path) -> tuple[TierPaths, dict[str, Any]]:
    """(TierPaths, sources) of a trtllm-pytorch tier: the HF checkpoint the LLM API loads.

    The build's unified HF checkpoint when there is one; else, for an unquantized tier, the spec's own
    checkpoint (the LLM API loads it as it is); else a placeholder where the GPU host is expected to have
    the quantized checkpoint (`tritonforge build` makes it). Sources as in `render.resolve_tier_paths_sourced`.
    """

    def pick(built: str | None, ref: str | None, quantized: bool, placeholder: str) -> tuple[str, str]:
        if built:
            return str(Path(built).resolve()), "build"
        if ref is not None and not quantized:
            return _checkpoint_ref(ref, spec_dir), "spec"
        return placeholder, "placeholder"

    q = tier.quantization
    model, model_src = pick(
        a.checkpoint_dir,
        tier.model,
        q.format.value != "none" or q.kv_cache_dtype.value != "auto",
        f"/checkpoints/{tier.name}/checkpoint",
    )
    if tier.tokenizer:
        tok, tok_src = _checkpoint_ref(tier.tokenizer, spec_dir), "spec"
    else:
        tok, tok_src = pick(a.tokenizer_dir, tier.model, False, f"/checkpoints/{tier.name}/tokenizer")
    draft = draft_src = None
    if tier.draft is not None:
        dq = tier.draft.quantization
        draft, draft_src = pick(
            a.draft_checkpoint_dir,
            tier.draft.model,
            dq.format.value != "none" or dq.kv_cache_dtype.value != "auto",
            f"/checkpoints/{tier.name}/draft_checkpoint",
        )
    sources = {
        "checkpoint_dir": {"path": model, "source": model_src},
        "tokenizer_dir": {"path": tok, "source": tok_src},
        **({"draft_checkpoint_dir": {"path": draft, "source": draft_src}} if tier.draft else {}),
    }
    return TierPaths(model, tok, draft, engine=a), sources
