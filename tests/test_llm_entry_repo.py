"""Checks of the `llm` model file and of the policy package it vendors."""

from __future__ import annotations

from tests.helpers.entry_repo import POLICY, TEMPLATE, render_llm_py


def test_model_file_is_plain_python_that_finds_its_vendored_package() -> None:
    text = TEMPLATE.read_text()
    assert not any(m in text for m in ("{{", "{%", "{#")), "the llm model has no template values"
    head = text[: text.index("from tf_policy")]
    assert 'os.environ.get("TRITONFORGE_PYTHONPATH"' in head and "sys.path.insert(0, os.path.dirname(" in head
    compile(render_llm_py(), "model.py", "exec")


def test_policy_package_never_imports_tritonforge() -> None:
    for path in POLICY.rglob("*.py"):
        src = path.read_text()
        assert "import tritonforge" not in src and "from tritonforge" not in src, path
