"""The cache defaults are one fact: the template side (tf_policy/config.py CacheConfig, which runs inside Triton
and cannot import builder) states the spec's defaults (builder/spec.py Cache) again, and this keeps them equal."""

from __future__ import annotations

from dataclasses import MISSING, Field, fields
from typing import Any

import pytest

from tritonforge.builder.spec import Cache
from tritonforge.model_repo_templates.tf_policy.config import CacheConfig

SHARED = [f for f in fields(CacheConfig) if f.name in Cache.model_fields]


def test_the_shared_fields_are_the_spec_section() -> None:
    assert {f.name for f in SHARED} >= {"similarity_threshold", "ttl_s", "capacity", "semantic", "backend"}


@pytest.mark.parametrize("field", SHARED, ids=lambda f: f.name)
def test_template_default_is_the_spec_default(field: Field[Any]) -> None:
    template = field.default if field.default is not MISSING else field.default_factory()
    assert template == getattr(Cache(), field.name)
