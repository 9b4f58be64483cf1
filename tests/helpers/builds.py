"""A build manifest as `tritonforge build` writes it, for tests of what emit and serve do with one."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import EXAMPLES
from tritonforge.builder.manifest import SCHEMA, write_manifest
from tritonforge.builder.spec import load_spec


def fake_build(example: str, root: Path, tokenizer_under: str | None = None) -> Path:
    """A build manifest as `tritonforge build` writes it, with engine and tokenizer directories that exist
    (empty: nothing here loads them). `tokenizer_under` puts the tokenizers below that directory instead."""
    spec = load_spec(EXAMPLES / example)
    build_dir = root / "build" / spec.name
    tiers = {}
    for t in spec.tiers:
        tdir = build_dir / t.name
        tok = Path(tokenizer_under) / t.name / "tokenizer" if tokenizer_under else tdir / "tokenizer"
        entry = {"engine_dir": str(tdir / "engine"), "tokenizer_dir": str(tok)}
        if t.draft is not None:
            entry["draft_engine_dir"] = str(tdir / "draft_engine")
        for d in entry.values():
            Path(d).mkdir(parents=True, exist_ok=True)
        tiers[t.name] = entry
    write_manifest(
        build_dir, {"schema": SCHEMA, "spec": {"name": spec.name, "hash": spec.spec_hash()}, "tiers": tiers}
    )
    return build_dir
