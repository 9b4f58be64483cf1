"""`tritonforge router train / explain`: a real classifier trained on real embeddings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.helpers.entry_repo import shared_embedder
from tritonforge.ensembles.cli import router_group
from tritonforge.model_repo_templates.tf_policy.classifier import LinearClassifier
from tritonforge.model_repo_templates.tf_policy.config import parse_entry_config
from tritonforge.model_repo_templates.tf_policy.params import parse_request
from tritonforge.model_repo_templates.tf_policy.router import build_router

ROOT = Path(__file__).resolve().parent.parent

SIMPLE = [
    "What is the capital of Spain?",
    "Translate hello to French.",
    "What colour is the sky?",
    "How many days are in a week?",
    "Who wrote Hamlet?",
    "What is the opposite of hot?",
    "Name a fruit that is yellow.",
    "What time zone is London in?",
    "Spell the word necessary.",
    "Is a tomato a fruit?",
    "What is the plural of mouse?",
    "Give me a synonym for happy.",
    "What language is spoken in Brazil?",
    "How many legs does a cat have?",
    "What is 3 plus 4?",
    "Say good morning in Spanish.",
    "What is the largest ocean?",
    "Which animal barks?",
    "What is the freezing point of water in Celsius?",
    "Who painted the Mona Lisa?",
]
COMPLEX = [
    "Write a Python function that merges overlapping intervals and explain its complexity.",
    "Prove that there are infinitely many prime numbers.",
    "Derive the closed form of the sum of the first n squares step by step.",
    "Refactor this Java class to use dependency injection and add unit tests.",
    "Explain why quicksort has O(n log n) average complexity with a recurrence.",
    "Implement a thread-safe LRU cache in C++ with templates.",
    "Compare the causes of the First and Second World Wars in a structured essay.",
    "Design a database schema for a multi-tenant SaaS billing system with migrations.",
    "Solve the differential equation y'' + 4y = sin(2x) and show each step.",
    "Write a SQL query with window functions to compute a 7-day rolling retention rate.",
    "Debug this recursive descent parser that fails on nested parentheses.",
    "Analyse the time complexity of Dijkstra's algorithm with a binary heap versus a Fibonacci heap.",
    "Write a Rust async web server with graceful shutdown and structured logging.",
    "Explain the proof of the central limit theorem using characteristic functions.",
    "Plan a multi-step data migration from MongoDB to PostgreSQL without downtime.",
    "Implement backpropagation for a two-layer neural network in NumPy from scratch.",
    "Show that the halting problem is undecidable by diagonalization.",
    "Write a Kubernetes operator in Go that reconciles a custom resource.",
    "Evaluate the integral of x^2 e^x dx by parts and verify by differentiation.",
    "Optimise this pandas pipeline that runs out of memory on a 50 GB CSV file.",
]


@pytest.fixture(scope="module", autouse=True)
def one_embedder():
    """`router` commands use the embedder loaded once for the test run (the same packaged model)."""
    import tritonforge.ensembles.cli as cli_mod

    original = cli_mod._embedder
    cli_mod._embedder = lambda name: shared_embedder()
    yield
    cli_mod._embedder = original


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("router-train")
    data = d / "labelled.jsonl"
    rows = [{"prompt": p, "tier": "small"} for p in SIMPLE[:-4]] + [
        {"prompt": p, "tier": "large"} for p in COMPLEX[:-4]
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = CliRunner().invoke(router_group, ["train", str(data), "-o", str(d / "clf.json")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "train accuracy" in result.output and "5-fold CV accuracy" in result.output
    return d / "clf.json"


def test_trained_file_is_portable_json(trained: Path) -> None:
    d = json.loads(trained.read_text())
    assert d["format"] == "tritonforge-router-classifier" and d["classes"] == ["large", "small"]
    assert len(d["coef"][0]) == 384 + 3 and d["metrics"]["examples"] == 32
    clf = LinearClassifier.load(str(trained))
    assert clf.dim == 384


def test_classifier_routes_held_out_prompts(trained: Path) -> None:
    cfg = parse_entry_config(
        {
            "tiers": [{"name": "small", "model": "s"}, {"name": "large", "model": "l"}],
            "router": {"enabled": True, "policy": "classifier"},
        }
    )
    router = build_router(cfg, LinearClassifier.load(str(trained)), shared_embedder().embed)
    for prompt, want in [(p, "small") for p in SIMPLE[-4:]] + [(p, "large") for p in COMPLEX[-4:]]:
        r = parse_request(
            {"text_input": np.array([prompt.encode()], dtype=object), "max_tokens": np.array([32])}
        )
        d = router.route(r)
        assert (d.tier, d.policy) == (want, "classifier"), (prompt, d.reason)


def test_classifier_degrades_to_heuristic() -> None:
    cfg = parse_entry_config(
        {
            "tiers": [{"name": "small", "model": "s"}, {"name": "large", "model": "l"}],
            "router": {"enabled": True, "policy": "classifier"},
        }
    )

    def broken(text: str):
        raise RuntimeError("no model")

    r = parse_request({"text_input": np.array([b"prove it"], dtype=object), "max_tokens": np.array([8])})
    clf = LinearClassifier(["large", "small"], np.zeros((1, 387), np.float32), np.zeros(1, np.float32))
    d = build_router(cfg, clf, broken).route(r)
    assert d.tier == "large" and "heuristic" in d.reason
    assert "unavailable" in build_router(cfg, None, None).route(r).reason


def test_explain_with_classifier_and_with_spec(trained: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        router_group, ["explain", "Who wrote Hamlet?", "--classifier", str(trained), "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert (
        out["tier"] == "small"
        and out["policy"] == "classifier"
        and out["fallback_order"] == ["small", "large"]
    )
    res = runner.invoke(
        router_group, ["explain", "def f(x): return x", "--spec", str(ROOT / "examples" / "cascade-cpu.yaml")]
    )
    assert res.exit_code == 0, res.output
    assert "tier: large" in res.output and "complex markers" in res.output


def test_cli_errors_are_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tritonforge", "router", "train", "/no/such.jsonl", "-o", "/tmp/x.json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "not found" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_training_lines_are_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "tier": "small"}\n{"prompt": 3}\n')
    res = CliRunner().invoke(router_group, ["train", str(bad), "-o", str(tmp_path / "c.json")])
    assert res.exit_code != 0 and "line 2" in str(res.exception)
