"""`tritonforge router ...`: train the routing classifier, explain a routing decision, inspect a Redis cache."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from tritonforge.errors import UserError
from tritonforge.model_repo_templates.tf_policy.config import (
    CacheConfig,
    ConfigError,
    EntryConfig,
    RouterConfig,
    TierConfig,
)


@click.group("router")
def router_group() -> None:
    """Routing classifier and response-cache tools."""


def _embedder(name: str) -> Any:
    from tritonforge.model_repo_templates.tf_policy.embedding import EmbeddingError, load_embedder

    try:
        return load_embedder(name, threads=max(1, (os.cpu_count() or 1)))
    except EmbeddingError as exc:
        raise UserError(f"{exc}") from None


@router_group.command("train")
@click.argument("labelled", type=click.Path(dir_okay=False))
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="Classifier file to write (JSON)."
)
@click.option(
    "--embedding-model",
    default="builtin:all-minilm-l6-v2",
    show_default=True,
    help="Sentence model: builtin:all-minilm-l6-v2 or a local sentence-transformers directory.",
)
@click.option("-C", "c", default=4.0, show_default=True, type=float, help="Inverse regularization strength.")
def train_command(labelled: str, output: str, embedding_model: str, c: float) -> None:
    """Train the routing classifier from LABELLED.jsonl.

    Each line: {"prompt": "...", "tier": "small" | "large" | <tier name>, "max_tokens": 64 (optional)}.
    Labels `small`/`large` mean the router's small_tier/large_tier; other labels must be tier names.
    The result is a small JSON file (logistic regression over all-MiniLM-L6-v2 embeddings); point
    the spec's `router.classifier_path` at it and use `router.policy: classifier`.
    """
    from tritonforge.model_repo_templates.tf_policy.classifier import read_labelled, train

    path = Path(labelled)
    if not path.is_file():
        raise UserError(f'{labelled}: not found; give a JSONL file of {{"prompt": ..., "tier": ...}} lines')
    try:
        rows = read_labelled(path.read_text(encoding="utf-8").splitlines())
    except ValueError as exc:
        raise UserError(f"{labelled}: {exc}") from None
    if len(rows) < 4:
        raise UserError(f"{labelled}: {len(rows)} examples; give at least 4 (a few dozen per tier is better)")
    emb = _embedder(embedding_model)
    try:
        clf = train(rows, emb.embed_batch, embedding_model, c=c)
    except ValueError as exc:
        raise UserError(f"{labelled}: {exc}") from None
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(clf.to_json() + "\n", encoding="utf-8")
    os.replace(tmp, out)
    m = clf.metrics
    cv = f", {m['cv_folds']}-fold CV accuracy {m['cv_accuracy']:.3f}" if "cv_accuracy" in m else ""
    click.echo(
        f"trained on {m['examples']} examples ({', '.join(f'{k}: {v}' for k, v in m['per_class'].items())}): "
        f"train accuracy {m['train_accuracy']:.3f}{cv}"
    )
    click.echo(
        f"wrote {out} ({out.stat().st_size} bytes); set router.policy: classifier, router.classifier_path: {out}"
    )


def _entry_config(spec_path: str | None, classifier: str | None) -> tuple[EntryConfig, str]:
    """An EntryConfig from a spec (tiers, router, cache) or the defaults (tiers small, large)."""
    base = "."
    try:
        if spec_path:
            from tritonforge.builder.spec import load_spec

            spec = load_spec(spec_path)
            base = str(Path(spec_path).resolve().parent)
            tiers = [
                TierConfig(
                    name=t.name,
                    model=t.name,
                    max_input_len=t.limits.max_input_len,
                    max_output_len=t.limits.max_output_len,
                )
                for t in spec.tiers
            ]
            tiers += [
                TierConfig(name=r.name, model=r.model, kind="remote", protocol=r.kind, url=r.url)
                for r in spec.router.remote
            ]
            router = RouterConfig.from_dict(spec.router.model_dump(mode="json", exclude={"remote"}))
            if not spec.router.enabled:
                router = replace(router, enabled=len(tiers) > 1)
            cache = CacheConfig.from_dict(spec.cache.model_dump(mode="json"))
            cfg = EntryConfig(tiers=tuple(tiers), router=router, cache=cache)
        else:
            cfg = EntryConfig(
                tiers=(TierConfig(name="small", model="small"), TierConfig(name="large", model="large")),
                router=RouterConfig(enabled=True),
            )
        if classifier:
            router = replace(cfg.router, policy="classifier")
            cfg = replace(cfg, router=router, classifier_file=str(Path(classifier).resolve()))
        elif cfg.router.classifier_path:
            cfg = replace(cfg, classifier_file=cfg.router.classifier_path)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    return cfg, base


@router_group.command("explain")
@click.argument("prompt")
@click.option(
    "--spec", "spec_path", type=click.Path(dir_okay=False), help="Use this spec's tiers and router settings."
)
@click.option(
    "--classifier",
    type=click.Path(dir_okay=False),
    help="A file from `router train` (implies policy classifier).",
)
@click.option("--max-tokens", default=64, show_default=True, type=int, help="The request's max_tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def explain_command(
    prompt: str, spec_path: str | None, classifier: str | None, max_tokens: int, as_json: bool
) -> None:
    """Show which tier PROMPT would be routed to, and why."""
    import numpy as np

    from tritonforge.model_repo_templates.tf_policy.factory import load_classifier
    from tritonforge.model_repo_templates.tf_policy.params import parse_request
    from tritonforge.model_repo_templates.tf_policy.router import build_router

    cfg, base = _entry_config(spec_path, classifier)
    clf, embed = None, None
    if cfg.router.policy == "classifier":
        clf = load_classifier(cfg, base)
        if clf is None:
            raise UserError(
                f"cannot load the classifier {cfg.classifier_file!r}; train one with `tritonforge router train`"
            )
        embed = _embedder(clf.embedding_model or "builtin:all-minilm-l6-v2").embed
    router = build_router(cfg, clf, embed)
    req = parse_request(
        {"text_input": np.array([prompt.encode()], dtype=object), "max_tokens": np.array([max_tokens])}
    )
    d = router.route(req)
    out = {
        "tier": d.tier,
        "policy": d.policy,
        "reason": d.reason,
        "features": d.features,
        "fallback_order": router.chain(d),
        "token_count": "tokenizer" if router.count.exact else "estimate",
    }
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
        return
    click.echo(f"tier: {d.tier}  (policy {d.policy})")
    click.echo(f"why: {d.reason}")
    click.echo("features: " + ", ".join(f"{k}={v}" for k, v in d.features.items()))
    click.echo("fallback order: " + " -> ".join(out["fallback_order"]))


@router_group.command("cache-stats")
@click.option("--redis-url", default="redis://127.0.0.1:6379/0", show_default=True)
@click.option("--prefix", default="tf:", show_default=True, help="Key prefix (entry_config cache_prefix).")
def cache_stats_command(redis_url: str, prefix: str) -> None:
    """Entries held by a Redis response cache."""
    click.echo(json.dumps(_redis(redis_url, prefix).stats()))


@router_group.command("cache-clear")
@click.option("--redis-url", default="redis://127.0.0.1:6379/0", show_default=True)
@click.option("--prefix", default="tf:", show_default=True, help="Key prefix (entry_config cache_prefix).")
def cache_clear_command(redis_url: str, prefix: str) -> None:
    """Delete every cached response under PREFIX (instances reload their indexes)."""
    click.echo(f"deleted {_redis(redis_url, prefix).clear()} keys")


def _redis(url: str, prefix: str) -> Any:
    try:
        from tritonforge.model_repo_templates.tf_policy.redis_backend import RedisBackend

        backend = RedisBackend(url, 1, 1, prefix=prefix, timeout_s=2.0)
        backend.r.ping()
        return backend
    except ImportError:
        raise UserError("the redis package is missing; pip install 'tritonforge[cache]'") from None
    except Exception as exc:  # noqa: BLE001 - connection problems
        raise UserError(f"cannot reach redis at {url}: {exc}") from None
