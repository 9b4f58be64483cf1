"""Bugs the type check (scripts/typecheck.py) found, each pinned by a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tritonforge.errors import UserError
from tritonforge.loadtest import workload


def test_trace_line_with_an_oversized_integer_is_one_clear_error(tmp_path: Path) -> None:
    # json.loads raises a plain ValueError (no `.msg`, unlike JSONDecodeError) for an integer longer than
    # Python's int digit limit; the trace reader must still answer with its one-line UserError.
    p = tmp_path / "trace.jsonl"
    p.write_text('{"prompt": "hi", "max_tokens": ' + "9" * 5000 + "}\n")
    with pytest.raises(UserError) as e:
        workload.generate(workload.parse_workload(f"trace={p}"), None, 0)
    assert "line 1 is not JSON" in str(e.value) and "\n" not in str(e.value)


def test_model_config_with_an_oversized_integer_is_one_clear_error(tmp_path: Path) -> None:
    from tritonforge.builder.modelref import read_config

    (tmp_path / "config.json").write_text('{"hidden_size": ' + "9" * 5000 + "}")
    with pytest.raises(UserError) as e:
        read_config(tmp_path)
    assert "not valid JSON" in str(e.value) and "\n" not in str(e.value)


def test_labelled_routing_data_with_an_oversized_integer_is_a_value_error() -> None:
    from tritonforge.model_repo_templates.tf_policy.classifier import read_labelled

    with pytest.raises(ValueError, match="line 1: not JSON"):
        read_labelled(['{"prompt": "x", "tier": "small", "max_tokens": ' + "9" * 5000 + "}"])
