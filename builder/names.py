"""Names of the Triton models generated for a tier: one definition, used by the wiring and the spec check.

Kept free of imports so that `builder.spec` (which refuses user-chosen names that collide with these)
and `ensembles.wiring` (which emits the models) can both use it without an import cycle.
"""

from __future__ import annotations

# role -> model name suffix (the whole name in a single-tier repository)
TIER_MODEL_SUFFIXES: dict[str, str] = {
    "preprocessing": "preprocessing",
    "engine": "tensorrt_llm",
    "draft_engine": "tensorrt_llm_draft",
    "postprocessing": "postprocessing",
    "ensemble": "ensemble",
    "speculative_bls": "tensorrt_llm_bls",
}


def tier_model_names(tier_name: str, single_tier: bool) -> dict[str, str]:
    """Conventional names for one tier's models; prefixed by the tier name when the repository has several."""
    prefix = "" if single_tier else f"{tier_name}_"
    return {role: f"{prefix}{suffix}" for role, suffix in TIER_MODEL_SUFFIXES.items()}
