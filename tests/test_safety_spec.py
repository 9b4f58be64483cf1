"""Hostile or careless specs end in one clear line and exit 2, through the real `tritonforge` entry point.

Covers: undecodable files, pathological YAML, non-integers and out-of-range limits, limits past the model's
context length, `plan` on a tier that does not fit, user names that collide with generated model names,
and credentials or unsafe URLs in remote tiers.
"""

from __future__ import annotations

import codecs
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tritonforge.builder import names
from tritonforge.builder.spec import parse_spec
from tritonforge.cli import main
from tritonforge.errors import UserError

TINY = {
    "name": "t",
    "tiers": [
        {"name": "main", "model": "builtin:tiny", "limits": {"max_input_len": 512, "max_output_len": 128}}
    ],
}
# A well-formed key shape (not a real key): an OpenAI-style project key and a GitHub token.
FAKE_OPENAI_KEY = "sk-proj-" + "Ab3dEf6hIj9lMn2pQr5tUv8x" * 2
FAKE_GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


def run(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> tuple[int, str, str]:
    """`tritonforge ARGS` in this process (the console entry point itself): exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["tritonforge", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def write(tmp_path: Path, data: dict | str | bytes, name: str = "spec.yaml") -> str:
    p = tmp_path / name
    if isinstance(data, bytes):
        p.write_bytes(data)
    else:
        p.write_text(
            data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8"
        )
    return str(p)


def refused(tmp_path, monkeypatch, capsys, data, *expected: str, command: str = "check") -> str:
    path = write(tmp_path, data)
    args = ["spec", "check", path] if command == "check" else [command, path]
    code, _, err = run(args, monkeypatch, capsys)
    assert code == 2, err
    line = one_error_line(err)
    for e in expected:
        assert e in line, line
    return line


# ------------------------------------------------------------------------------------ encodings


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (bytes(range(256)) * 4, "binary"),
        ("name: t\ntiers: " + "[" * 10_000 + "]" * 10_000 + "\n", "nested more than"),  # a YAML shape
    ],
    ids=["binary-file", "nested-ten-thousand-deep"],
)
def test_refused_with_one_line_in_a_subprocess(tmp_path, data, expected):
    """Refused by the real CLI process (exit 2, one line): no traceback, no recursion crash."""
    proc = subprocess.run(
        [sys.executable, "-m", "tritonforge", "spec", "check", write(tmp_path, data)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert expected in one_error_line(proc.stderr)


def test_latin1_names_the_line_and_the_fix(tmp_path, monkeypatch, capsys):
    text = "name: t\ndescription: caf\u00e9 au lait\ntiers: [{name: main, model: builtin:tiny}]\n"
    line = refused(
        tmp_path,
        monkeypatch,
        capsys,
        text.encode("latin-1"),
        "line 2",
        "0xe9",
        "not UTF-8",
        "save it as UTF-8",
    )
    assert "caf" not in line


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_utf16_and_utf32_refused(tmp_path, monkeypatch, capsys, encoding):
    text = yaml.safe_dump(TINY)
    refused(tmp_path, monkeypatch, capsys, text.encode(encoding), "UTF-8")


def test_utf8_with_bom_is_accepted(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, codecs.BOM_UTF8 + yaml.safe_dump(TINY).encode())
    code, out, err = run(["spec", "check", path], monkeypatch, capsys)
    assert code == 0, err
    assert out.startswith("ok: t:")


def test_control_character_refused(tmp_path, monkeypatch, capsys):
    refused(tmp_path, monkeypatch, capsys, "name: t\x07\ntiers: []\n", "line 1", "not allowed in YAML")


# ------------------------------------------------------------------------------------ YAML shape


def test_deep_mappings_refused(tmp_path, monkeypatch, capsys):
    text = (
        "name: t\ntiers: []\nx:\n"
        + "".join("  " * i + f"k{i}:\n" for i in range(1, 200))
        + "  " * 200
        + "v: 1\n"
    )
    refused(tmp_path, monkeypatch, capsys, text, "nested more than")


def test_duplicate_top_level_key_named_with_line(tmp_path, monkeypatch, capsys):
    text = "name: t\ntiers: [{name: main, model: builtin:tiny}]\nname: u\n"
    refused(tmp_path, monkeypatch, capsys, text, "line 3", "duplicate key 'name'", "first at line 1")


def test_duplicate_nested_key_named_with_line(tmp_path, monkeypatch, capsys):
    text = (
        "name: t\ntiers:\n  - name: main\n    model: builtin:tiny\n    limits:\n      max_batch_size: 8\n"
        "      max_batch_size: 64\n"
    )
    refused(tmp_path, monkeypatch, capsys, text, "line 7", "duplicate key 'max_batch_size'")


def test_merge_keys_may_be_overridden(tmp_path, monkeypatch, capsys):
    # `<<` merges are not duplicates: an explicit key may override a merged one.
    text = (
        "name: t\ntiers:\n  - name: main\n    model: builtin:tiny\n"
        "    limits: {<<: {max_batch_size: 4, max_input_len: 256, max_output_len: 64}, max_batch_size: 2}\n"
    )
    code, out, err = run(["spec", "check", "--json", write(tmp_path, text)], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads(out)["tiers"][0]["limits"]["max_batch_size"] == 2


# ------------------------------------------------------------------------------------ integers


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("1.0e+20", "1e+20"),
        ("1.0e+10", "10000000000.0"),
        ("1e20", "'1e20'"),
        ("true", "True"),
        ('"512"', "'512'"),
        ("512.0", "512.0"),
    ],
)
def test_limits_must_be_real_integers(tmp_path, monkeypatch, capsys, value, shown):
    text = (
        f"name: t\ntiers:\n  - name: main\n    model: builtin:tiny\n    limits: {{max_input_len: {value}}}\n"
    )
    refused(tmp_path, monkeypatch, capsys, text, "tiers.0.limits.max_input_len", "whole number", shown)


def test_max_batch_size_true_refused(tmp_path, monkeypatch, capsys):
    text = "name: t\ntiers:\n  - name: main\n    model: builtin:tiny\n    limits: {max_batch_size: true}\n"
    refused(tmp_path, monkeypatch, capsys, text, "tiers.0.limits.max_batch_size", "got True")


@pytest.mark.parametrize("field", ["max_input_len", "max_output_len", "max_num_tokens"])
def test_limits_above_int32_refused_before_any_command_is_printed(tmp_path, monkeypatch, capsys, field):
    data = {
        "name": "t",
        "tiers": [
            {
                "name": "main",
                "model": "fixture:llama-3.1-8b",
                "runtime": "trtllm-engine",
                "limits": {field: 3_000_000_000},
            }
        ],
    }
    path = write(tmp_path, data)
    code, out, err = run(["plan", path], monkeypatch, capsys)
    assert code == 2 and "trtllm-build" not in out
    assert "less than or equal to 2147483647" in one_error_line(err)


def test_seq_len_sum_above_int32_refused():
    with pytest.raises(UserError, match="above 2147483647"):
        parse_spec(
            {
                "name": "t",
                "tiers": [
                    {
                        "name": "main",
                        "model": "builtin:tiny",
                        "limits": {"max_input_len": 2**31 - 1, "max_output_len": 2},
                    }
                ],
            }
        )


def test_infinite_timeout_refused(tmp_path, monkeypatch, capsys):
    text = (
        "name: t\ntiers: [{name: main, model: builtin:tiny}]\nrouter:\n  enabled: true\n"
        "  tier_timeout_s: .inf\n"
    )
    refused(tmp_path, monkeypatch, capsys, text, "router.tier_timeout_s", "finite")


# ------------------------------------------------------------------------- limits vs the model


def test_limit_above_builtin_context_refused_by_check_and_plan(tmp_path, monkeypatch, capsys):
    data = {
        "name": "t",
        "tiers": [
            {
                "name": "main",
                "model": "builtin:tiny",
                "limits": {"max_input_len": 2000, "max_output_len": 256},
            }
        ],
    }
    for command in ("check", "plan"):
        line = refused(
            tmp_path,
            monkeypatch,
            capsys,
            data,
            "2256",
            "max_position_embeddings 1024",
            "at most 1024",
            command=command,
        )
        assert "builtin:tiny" in line


def test_limit_above_fixture_context_refused_on_a_gpu_tier(tmp_path, monkeypatch, capsys):
    data = {
        "name": "t",
        "tiers": [
            {
                "name": "main",
                "model": "fixture:qwen2.5-7b",
                "runtime": "trtllm-engine",
                "limits": {"max_input_len": 40_000, "max_output_len": 1000},
            }
        ],
    }
    refused(tmp_path, monkeypatch, capsys, data, "max_position_embeddings 32768", "41000")
    code, out, err = run(["plan", write(tmp_path, data)], monkeypatch, capsys)
    assert code == 2 and "tier main" in out  # the plan is printed first
    assert "max_position_embeddings 32768" in one_error_line(err)


def test_draft_context_checked_too(tmp_path, monkeypatch, capsys):
    # builtin:demo holds 2048 positions, its draft partner builtin:tiny-draft only 1024.
    data = {
        "name": "t",
        "tiers": [
            {
                "name": "main",
                "model": "builtin:demo",
                "draft": {"model": "builtin:tiny-draft"},
                "limits": {"max_input_len": 1500, "max_output_len": 100},
            }
        ],
    }
    refused(
        tmp_path, monkeypatch, capsys, data, "draft model builtin:tiny-draft", "max_position_embeddings 1024"
    )


def test_yarn_rope_scaling_extends_the_context(tmp_path, monkeypatch, capsys):
    from tritonforge.builder.modelref import load_fixture

    cfg = load_fixture("qwen2.5-7b")
    cfg["rope_scaling"] = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    ckpt = tmp_path / "qwen-yarn"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps(cfg))
    ok = {
        "name": "t",
        "tiers": [
            {"name": "main", "model": str(ckpt), "limits": {"max_input_len": 100_000, "max_output_len": 1000}}
        ],
    }
    code, _, err = run(["spec", "check", write(tmp_path, ok)], monkeypatch, capsys)
    assert code == 0, err
    ok["tiers"][0]["limits"]["max_input_len"] = 131_000
    refused(tmp_path, monkeypatch, capsys, ok, "yarn rope_scaling x4 = 131072")


def test_a_model_not_on_this_machine_is_not_checked_by_spec_check(tmp_path, monkeypatch, capsys):
    data = {"name": "t", "tiers": [{"name": "main", "model": "/nowhere/my-own-model"}]}
    code, _, err = run(["spec", "check", write(tmp_path, data)], monkeypatch, capsys)
    assert code == 0, err


@pytest.mark.parametrize("broken", ["fixture", "config"])
def test_unknown_fixture_or_broken_config_refused_by_spec_check(tmp_path, monkeypatch, capsys, broken):
    model = "fixture:llama-9-900b"
    if broken == "config":
        (tmp_path / "ckpt").mkdir()
        (tmp_path / "ckpt" / "config.json").write_text("{not json")
        model = str(tmp_path / "ckpt")
    data = {"name": "t", "tiers": [{"name": "main", "model": model}]}
    refused(
        tmp_path,
        monkeypatch,
        capsys,
        data,
        "unknown config fixture" if broken == "fixture" else "not valid JSON",
    )


# ------------------------------------------------------------------------------------ plan exit


def test_plan_does_not_fit_exits_2_after_printing_the_table(tmp_path, monkeypatch, capsys):
    # A cpu-reference tier stands in for the engine on its GPU target; 70B bf16 cannot fit one H100.
    data = {"name": "t", "tiers": [{"name": "main", "model": "fixture:llama-3.1-70b"}]}
    code, out, err = run(["plan", write(tmp_path, data)], monkeypatch, capsys)
    assert code == 2
    assert "DOES NOT FIT" in out and "ERROR" in out
    assert "does not fit" in one_error_line(err)


def test_plan_help_documents_the_exit_status(monkeypatch, capsys):
    code, out, _ = run(["plan", "--help"], monkeypatch, capsys)
    assert code == 0 and "DOES NOT FIT" in out and "2  a rule fails" in out


def test_plan_on_the_examples_exits_0(monkeypatch, capsys):
    for path in sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml")):
        code, out, err = run(["plan", str(path)], monkeypatch, capsys)
        assert code == 0, f"{path.name}: {err}"
        assert "DOES NOT FIT" not in out


# ------------------------------------------------------------------------------------ names


def test_entry_model_named_like_the_tier_ensemble_refused(tmp_path, monkeypatch, capsys):
    data = {**TINY, "cache": {"enabled": True}, "triton": {"entry_model": "ensemble"}}
    refused(
        tmp_path,
        monkeypatch,
        capsys,
        data,
        "triton.entry_model 'ensemble'",
        "ensemble model of tier 'main'",
        "e.g. llm",
    )


@pytest.mark.parametrize(
    "entry", ["small_tensorrt_llm", "large_ensemble", "small_preprocessing", "large_tensorrt_llm_bls"]
)
def test_entry_model_colliding_in_a_multi_tier_repository(tmp_path, monkeypatch, capsys, entry):
    data = {
        "name": "t",
        "tiers": [
            {"name": "small", "model": "builtin:tiny-draft"},
            {"name": "large", "model": "builtin:tiny"},
        ],
        "router": {"enabled": True},
        "triton": {"entry_model": entry},
    }
    refused(tmp_path, monkeypatch, capsys, data, f"'{entry}'", "would overwrite it")


def test_entry_model_matches_what_emit_generates():
    from tritonforge.ensembles.wiring import model_names

    spec = parse_spec(
        {
            "name": "t",
            "tiers": [
                {"name": "small", "model": "builtin:tiny-draft"},
                {"name": "large", "model": "builtin:tiny"},
            ],
            "router": {"enabled": True},
        }
    )
    for tier in spec.tiers:
        generated = model_names(spec, tier)
        assert generated == names.tier_model_names(tier.name, single_tier=False)
        for model in generated.values():
            with pytest.raises(UserError, match="would overwrite it"):
                parse_spec({**spec.model_dump(mode="json"), "triton": {"entry_model": model}})


def test_tier_names_whose_model_names_collide_are_refused(monkeypatch):
    # No two of today's suffixes can collide; the check must still catch it when a new generated
    # model's suffix makes tier `a`'s model equal tier `a_x`'s.
    monkeypatch.setitem(names.TIER_MODEL_SUFFIXES, "extra", "x_ensemble")
    with pytest.raises(
        UserError,
        match="tier 'a_x' and the extra model of tier 'a' both generate the Triton model 'a_x_ensemble'",
    ):
        parse_spec(
            {
                "name": "t",
                "tiers": [{"name": "a", "model": "builtin:tiny"}, {"name": "a_x", "model": "builtin:tiny"}],
                "router": {"enabled": True},
            }
        )


# ------------------------------------------------------------------------------------ remote tiers


def remote(**kw: object) -> dict:
    return {**TINY, "router": {"enabled": True, "remote": [{"name": "big", "model": "gpt", **kw}]}}


@pytest.mark.parametrize(
    "key",
    [
        FAKE_OPENAI_KEY,
        FAKE_GITHUB_TOKEN,
        "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
        "AbCdEfGh1234567890IjKlMnOp",
    ],
)
def test_api_key_in_api_key_env_refused_and_never_echoed(tmp_path, monkeypatch, capsys, key):
    line = refused(
        tmp_path,
        monkeypatch,
        capsys,
        remote(url="https://api.example.com/v1", api_key_env=key),
        "router.remote.0.api_key_env",
        "looks like an API key",
        "environment variable",
    )
    assert key not in line and key[:12] not in line


@pytest.mark.parametrize("value", ["$OPENAI_API_KEY", "MY-KEY", "1KEY", "OPENAI API KEY"])
def test_api_key_env_must_be_a_variable_name(tmp_path, monkeypatch, capsys, value):
    refused(
        tmp_path,
        monkeypatch,
        capsys,
        remote(url="https://api.example.com/v1", api_key_env=value),
        "router.remote.0.api_key_env",
        "name of an environment variable",
    )


@pytest.mark.parametrize(
    "name", ["OPENAI_API_KEY", "openai_api_key", "MY_COMPANY_PRODUCTION_OPENAI_API_KEY_2"]
)
def test_variable_names_accepted(name):
    spec = parse_spec(remote(url="https://api.example.com/v1", api_key_env=name))
    assert spec.router.remote[0].api_key_env == name


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("file:///etc/passwd", "scheme 'file'"),
        ("ftp://host/x", "scheme 'ftp'"),
        ("gopher://h", "scheme 'gopher'"),
        ("api.example.com/v1", "no scheme"),
        ("http://", "no host"),
        ("http://host:99999/", "not a valid URL"),
    ],
)
def test_remote_url_must_be_http_or_https(tmp_path, monkeypatch, capsys, url, expected):
    refused(tmp_path, monkeypatch, capsys, remote(url=url), "router.remote.0.url", expected)


@pytest.mark.parametrize(
    "url",
    ["https://bob:hunter2secret@api.example.com/v1", "https://api.example.com/v1?api_key=hunter2secret"],
)
def test_credentials_in_remote_url_refused_and_never_echoed(tmp_path, monkeypatch, capsys, url):
    line = refused(tmp_path, monkeypatch, capsys, remote(url=url), "router.remote.0.url", "api_key_env")
    assert "hunter2secret" not in line


def test_plain_http_to_another_host_warns_on_stderr(tmp_path, monkeypatch, capsys):
    code, out, err = run(
        ["spec", "check", write(tmp_path, remote(url="http://10.1.2.3:8000", api_key_env="TEAM_KEY"))],
        monkeypatch,
        capsys,
    )
    assert code == 0 and out.startswith("ok: ")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: ")
    assert "plain http://" in lines[0] and "10.1.2.3" in lines[0] and "$TEAM_KEY" in lines[0]


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000", "https://api.example.com/v1"],
)
def test_loopback_http_and_https_do_not_warn(tmp_path, monkeypatch, capsys, url):
    code, _, err = run(["spec", "check", write(tmp_path, remote(url=url))], monkeypatch, capsys)
    assert code == 0 and err == ""


@pytest.mark.parametrize(
    ("remote_tier", "expected"),
    [
        ({"url": "file:///etc/passwd"}, "http:// or https:// only"),
        (
            {"url": "https://api.example.com/v1", "api_key_env": FAKE_OPENAI_KEY},
            "name of an environment variable",
        ),
    ],
)
def test_entry_model_refuses_unsafe_remote_tiers_too(remote_tier, expected):
    # The `llm` model's own config parser (its JSON can be edited by hand after emit).
    from tritonforge.model_repo_templates.tf_policy.config import ConfigError, parse_entry_config

    tiers = [
        {"name": "main", "model": "ensemble"},
        {"name": "big", "kind": "remote", "model": "gpt", **remote_tier},
    ]
    with pytest.raises(ConfigError, match=expected) as info:
        parse_entry_config({"tiers": tiers})
    assert FAKE_OPENAI_KEY not in str(info.value)
