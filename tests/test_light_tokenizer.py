"""The light tokenizer of pre/postprocessing agrees with transformers' own on the embedded models."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tritonforge.builder.demo_model import materialize
from tritonforge.model_repo_templates.tf_runtime.detok import ByteTable
from tritonforge.model_repo_templates.tf_runtime.light_tokenizer import LightTokenizer, load_tokenizer

TEXTS = ["def main(argv):\n    return 0\n", "héllo  wörld 世界 🎉", "x", "<s> not special as text"]


@pytest.mark.parametrize("name", ["tiny"])
def test_same_ids_specials_and_bytes(name: str) -> None:
    from transformers import AutoTokenizer

    path = materialize(name)
    light, hf = load_tokenizer(path), AutoTokenizer.from_pretrained(str(path))
    assert isinstance(light, LightTokenizer)
    for text in TEXTS:
        for special in (True, False):
            assert light.encode(text, add_special_tokens=special) == hf.encode(
                text, add_special_tokens=special
            )
    assert (light.eos_token_id, light.pad_token_id, light.bos_token_id) == (
        hf.eos_token_id,
        hf.pad_token_id,
        hf.bos_token_id,
    )
    assert sorted(light.all_special_ids) == sorted(hf.all_special_ids) and len(light) == len(hf)
    assert ByteTable(light).table == ByteTable(hf).table


def test_loading_does_not_import_transformers() -> None:
    path = materialize("tiny")
    code = (
        "import sys; from tritonforge.model_repo_templates.tf_runtime.light_tokenizer import load_tokenizer; "
        f"load_tokenizer({str(path)!r}); print('transformers' in sys.modules, 'torch' in sys.modules)"
    )
    assert subprocess.check_output([sys.executable, "-c", code], text=True).split() == ["False", "False"]
