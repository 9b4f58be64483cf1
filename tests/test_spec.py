"""The deployment spec: examples load; broken specs fail with one line naming field and fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tritonforge.builder.spec import load_spec, parse_spec
from tritonforge.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
BASE = {"name": "t", "tiers": [{"name": "main", "model": "builtin:tiny"}]}


def with_tier(**kw: object) -> dict:
    return {"name": "t", "tiers": [{"name": "main", "model": "builtin:tiny", **kw}]}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_load(path: Path) -> None:
    spec = load_spec(path)
    assert spec.tiers and spec.spec_hash() == load_spec(path).spec_hash()


BROKEN = [
    ({"tiers": BASE["tiers"]}, "name: required field is missing"),
    ({"name": "t", "tiers": []}, "tiers"),
    (with_tier(runtime="tensorrt"), "tiers.0.runtime"),
    (with_tier(quantization={"format": "fp3"}), "tiers.0.quantization.format"),
    (with_tier(limits={"max_batch_size": 0}), "tiers.0.limits.max_batch_size"),
    (with_tier(kv_cache={"tokens_per_block": 48}), "power of two"),
    (with_tier(kv_cache={"free_gpu_mem_fraction": 1.5}), "tiers.0.kv_cache.free_gpu_mem_fraction"),
    (with_tier(model="builtin:gpt5"), "unknown builtin model"),
    (with_tier(quantisation={"format": "fp8"}), "tiers.0.quantisation: unknown field"),
    ({"name": "t", "tiers": [{"name": "A-b", "model": "builtin:tiny"}]}, "tiers.0.name"),
    (
        {
            "name": "t",
            "tiers": [{"name": "a", "model": "builtin:tiny"}, {"name": "a", "model": "builtin:tiny"}],
        },
        "unique",
    ),
    (
        {
            "name": "t",
            "tiers": [{"name": "a", "model": "builtin:tiny"}, {"name": "b", "model": "builtin:tiny"}],
        },
        "router.enabled",
    ),
    ({**BASE, "router": {"enabled": True, "small_tier": "nope"}}, "router.small_tier"),
    ({**BASE, "cache": {"backend": "memcached"}}, "cache.backend"),
    (with_tier(draft={"model": "builtin:tiny-draft", "num_draft_tokens": 99}), "num_draft_tokens"),
    (["not", "a", "mapping"], "YAML mapping"),
]


@pytest.mark.parametrize(("data", "expected"), BROKEN)
def test_broken_spec_one_line(data: object, expected: str) -> None:
    with pytest.raises(UserError) as info:
        parse_spec(data, source="s.yaml")
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert message.startswith("s.yaml")


def test_cli_broken_spec_exit_2_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(with_tier(limits={"max_batch_size": -3})))
    proc = subprocess.run(
        [sys.executable, "-m", "tritonforge", "spec", "check", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "tiers.0.limits.max_batch_size" in lines[0]


def test_cli_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntiers: [\n  - {name: a\n")
    for args, expected in (([str(bad)], "line"), ([str(tmp_path / "nope.yaml")], "not found")):
        proc = subprocess.run(
            [sys.executable, "-m", "tritonforge", "spec", "check", *args], capture_output=True, text=True
        )
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr and "Traceback" not in proc.stderr


def test_schema_lists_fields() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tritonforge", "spec", "schema"], capture_output=True, text=True, check=True
    )
    assert '"tiers"' in proc.stdout and '"KvCache"' in proc.stdout
