"""Our preprocessing/postprocessing vs the TensorRT-LLM backend's own, same tokenizer, same Triton.

    python benchmarks/bench_prepost.py --backend-repo PATH [--extra-path DIR] [--model builtin:demo] [-n 400]

Their preprocessing imports Pillow at module level (for multimodal requests), which tritonforge does not
need: install it anywhere (`pip install --target DIR pillow`) and pass `--extra-path DIR`.

PATH is a checkout of the backend's public repository (github.com/triton-inference-server/tensorrtllm_backend,
whose `all_models/inflight_batcher_llm/` holds the models up to its December 2024 layout; newer releases keep
them in github.com/NVIDIA/TensorRT-LLM under `triton_backend/all_models/inflight_batcher_llm/`: either works).
Nothing of theirs is copied into this project: at run time their `preprocessing` and `postprocessing` model
directories are copied into a temporary repository as `backend_preprocessing` / `backend_postprocessing`,
their `${...}` config placeholders filled as the backend's `tools/fill_template.py` would (tokenizer dir,
batch size, instance counts: the same values as ours), and two lines put in front of their model.py so the
CPU Triton's Python stub (which ignores PYTHONPATH) finds transformers in this interpreter's site-packages.
Ours come from `tritonforge emit examples/cpu-demo.yaml` unchanged.

One client calls each model directly over gRPC, one call at a time, ours and theirs alternating call by call
(the order flips every call), with identical inputs: preprocessing gets distinct prompts of ~60 tokens;
postprocessing gets 1 token (a streamed chunk) and 64 tokens (a whole response). Per repeat it prints each
model's client-side p50 and the ratio ours/theirs, plus Triton's server-side mean compute time per call
(`/v2/models/<name>/stats`: compute_input + compute_infer + compute_output) and its ratio. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import yaml

from tritonforge.builder.spec import load_spec
from tritonforge.ensembles.render import emit_files, write_repository
from tritonforge.ensembles.server import TritonServer, free_ports

ROOT = Path(__file__).resolve().parent.parent
LAYOUTS = (
    "all_models/inflight_batcher_llm",
    "triton_backend/all_models/inflight_batcher_llm",
    "tensorrt_llm/triton_backend/all_models/inflight_batcher_llm",
)
# Lets their model.py import transformers from this interpreter: tritonforge serve passes the paths in
# TRITONFORGE_PYTHONPATH because the stub runs Python isolated (PYTHONPATH ignored).
PATH_PREAMBLE = (
    'import os, sys\nsys.path[0:0] = [p for p in os.environ.get("TRITONFORGE_PYTHONPATH", "")'
    ".split(os.pathsep) if p and p not in sys.path]\n"
)


def backend_models(path: Path) -> Path:
    for layout in LAYOUTS:
        if (path / layout / "preprocessing" / "1" / "model.py").is_file():
            return path / layout
    raise SystemExit(
        f"no inflight_batcher_llm/preprocessing under {path} (looked in {', '.join(LAYOUTS)}); "
        "pass a checkout of the TensorRT-LLM backend's repository"
    )


def param(config: str, key: str) -> str:
    m = re.search(r'key: "' + re.escape(key) + r'"\s*value: \{\s*string_value: "([^"]*)"', config)
    if not m:
        raise SystemExit(f"parameter {key} not in our config")
    return m.group(1)


def instances(config: str) -> int:
    return int(re.search(r"count: (\d+)", config).group(1))


def copy_theirs(src: Path, dst: Path, name: str, values: dict[str, str], extra: list[str]) -> None:
    shutil.copytree(src, dst)
    config = (dst / "config.pbtxt").read_text()
    config = re.sub(r'^name: "[^"]*"', f'name: "{name}"', config, flags=re.M)
    for key, value in values.items():
        config = config.replace("${" + key + "}", value)
    (dst / "config.pbtxt").write_text(config)
    model = dst / "1" / "model.py"
    model.write_text(PATH_PREAMBLE + f"sys.path.extend({extra!r})\n" + model.read_text())


def build(tmp: Path, backend_repo: Path, model: str, extra: list[str]) -> tuple[Path, str]:
    data = yaml.safe_load((ROOT / "examples" / "cpu-demo.yaml").read_text())
    data["tiers"][0]["model"] = model
    spec_path = tmp / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))
    files, _ = emit_files(load_spec(spec_path), tmp)
    write_repository(files, tmp / "emitted")
    repo = tmp / "repo"
    repo.mkdir()
    for m in ("preprocessing", "postprocessing"):
        shutil.copytree(tmp / "emitted" / m, repo / m)
    pre_cfg = (repo / "preprocessing" / "config.pbtxt").read_text()
    post_cfg = (repo / "postprocessing" / "config.pbtxt").read_text()
    tokenizer_dir = param(pre_cfg, "tokenizer_dir")
    values = {
        "tokenizer_dir": tokenizer_dir,
        "triton_max_batch_size": re.search(r"max_batch_size: (\d+)", pre_cfg).group(1),
        "add_special_tokens": "true",
        "skip_special_tokens": "true",
        "preprocessing_instance_count": str(instances(pre_cfg)),
        "postprocessing_instance_count": str(instances(post_cfg)),
    }
    theirs = backend_models(backend_repo)
    copy_theirs(
        theirs / "preprocessing", repo / "backend_preprocessing", "backend_preprocessing", values, extra
    )
    copy_theirs(
        theirs / "postprocessing", repo / "backend_postprocessing", "backend_postprocessing", values, extra
    )
    return repo, tokenizer_dir


def grpc_inputs(grpcclient, arrays: dict[str, np.ndarray]) -> list:
    out = []
    for name, value in arrays.items():
        dtype = "BYTES" if value.dtype == object else "INT32"
        t = grpcclient.InferInput(name, list(value.shape), dtype)
        t.set_data_from_numpy(value)
        out.append(t)
    return out


def server_compute_ns(http_url: str, model: str) -> tuple[int, int]:
    stats = requests.get(f"{http_url}/v2/models/{model}/stats", timeout=10).json()["model_stats"][0]
    s = stats["inference_stats"]
    ns = sum(int(s[k]["ns"]) for k in ("compute_input", "compute_infer", "compute_output"))
    return ns, int(s["success"]["count"])


def compare(
    client, grpcclient, http_url: str, ours: str, theirs: str, payloads: list[dict], repeats: int
) -> list[float]:
    """Alternate ours/theirs call by call; per repeat: p50s, ratio, server compute ratio."""
    ratios = []
    per_rep = len(payloads) // repeats
    for rep in range(repeats):
        times: dict[str, list[float]] = {ours: [], theirs: []}
        before = {m: server_compute_ns(http_url, m) for m in (ours, theirs)}
        for i, arrays in enumerate(payloads[rep * per_rep : (rep + 1) * per_rep]):
            order = (ours, theirs) if i % 2 == 0 else (theirs, ours)
            for model in order:
                inputs = grpc_inputs(grpcclient, arrays)
                t0 = time.perf_counter()
                client.infer(model, inputs)  # every output, as the ensemble takes them
                times[model].append(time.perf_counter() - t0)
        after = {m: server_compute_ns(http_url, m) for m in (ours, theirs)}
        server = {
            m: (after[m][0] - before[m][0]) / max(1, after[m][1] - before[m][1]) for m in (ours, theirs)
        }
        p50 = {m: statistics.median(times[m]) for m in times}
        ratio = p50[ours] / p50[theirs]
        ratios.append(ratio)
        print(
            f"  repeat {rep + 1}: p50 ours {1e3 * p50[ours]:.3f} ms, theirs {1e3 * p50[theirs]:.3f} ms, "
            f"ratio {ratio:.3f} | server compute mean ours {server[ours] / 1e3:.0f} us, theirs "
            f"{server[theirs] / 1e3:.0f} us, ratio {server[ours] / server[theirs]:.3f}",
            flush=True,
        )
    return ratios


def decode_work(tokenizer_dir: str, ids: list[int]) -> None:
    """In-process: the decoding each postprocessing does per call, without Triton (ours: the byte table and a
    UTF-8 decode; theirs: transformers' decode with skip_special_tokens, as their model calls it)."""
    from transformers import AutoTokenizer

    from tritonforge.model_repo_templates.tf_runtime.detok import ByteTable
    from tritonforge.model_repo_templates.tf_runtime.light_tokenizer import load_tokenizer

    table = ByteTable(load_tokenizer(tokenizer_dir))
    hf = AutoTokenizer.from_pretrained(tokenizer_dir)
    for length in (1, 64):
        chunk = ids[:length]
        for label, fn in (
            ("ours", lambda c=chunk: table.token_bytes(c).decode("utf-8", errors="replace")),
            ("theirs", lambda c=chunk: hf.decode(c, skip_special_tokens=True)),
        ):
            n = 2000
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            print(f"  decode work, {length} token(s), {label}: {1e6 * (time.perf_counter() - t0) / n:.1f} us")


def summary(label: str, ratios: list[float]) -> None:
    print(
        f"{label}: ours/theirs p50 median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, "
        f"max {max(ratios):.3f}, {len(ratios)} repeats)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend-repo", required=True, type=Path)
    ap.add_argument("--extra-path", action="append", default=[], help="directory added to their sys.path")
    ap.add_argument("--model", default="builtin:demo")
    ap.add_argument("-n", type=int, default=400, help="calls per model and payload kind, over all repeats")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    import tritonclient.grpc as grpcclient

    from tritonforge.model_repo_templates.tf_runtime.light_tokenizer import load_tokenizer

    backend_models(args.backend_repo)  # fail before any work
    with tempfile.TemporaryDirectory(prefix="tf-bench-prepost-") as tmp:
        repo, tokenizer_dir = build(
            Path(tmp), args.backend_repo, args.model, [str(Path(p).resolve()) for p in args.extra_path]
        )
        tokenizer = load_tokenizer(tokenizer_dir)
        corpus = (ROOT / "model_repo_templates" / "tf_runtime" / "engine.py").read_text()
        span = max(1, len(corpus) - 240)  # wrap around: every prompt is a full 240-character slice
        prompts = [corpus[(i * 97) % span :][:240] for i in range(args.n)]
        pre = [
            {
                "QUERY": np.array([[p.encode()]], dtype=object),
                "REQUEST_OUTPUT_LEN": np.array([[64]], dtype=np.int32),
            }
            for p in prompts
        ]
        ids = tokenizer.encode(corpus[:4000], add_special_tokens=False)

        def post(length: int) -> list[dict]:
            out = []
            for i in range(args.n):
                chunk = ids[(i * 7) % (len(ids) - length) :][:length]
                out.append(
                    {
                        "TOKENS_BATCH": np.array([[chunk]], dtype=np.int32),
                        "SEQUENCE_LENGTH": np.array([[length]], dtype=np.int32),
                    }
                )
            return out

        with TritonServer(repo, free_ports(), log_path=Path(tmp) / "triton.log") as srv:
            srv.wait_ready(300)
            client = grpcclient.InferenceServerClient(srv.grpc_url)
            for arrays in pre[:20]:  # warm-up
                for m in ("preprocessing", "backend_preprocessing"):
                    client.infer(m, grpc_inputs(grpcclient, arrays))
            for arrays in post(8)[:20]:
                for m in ("postprocessing", "backend_postprocessing"):
                    client.infer(m, grpc_inputs(grpcclient, arrays))
            results = {}
            print(f"preprocessing (~{len(tokenizer.encode(prompts[0]))}-token prompts):")
            results["preprocessing"] = compare(
                client, grpcclient, srv.http_url, "preprocessing", "backend_preprocessing", pre, args.repeats
            )
            for length in (1, 64):
                print(f"postprocessing ({length} token{'s' if length > 1 else ''} per call):")
                results[f"postprocessing {length}"] = compare(
                    client,
                    grpcclient,
                    srv.http_url,
                    "postprocessing",
                    "backend_postprocessing",
                    post(length),
                    args.repeats,
                )
            client.close()
    print("in-process decoding (no Triton):")
    decode_work(tokenizer_dir, ids)
    for label, ratios in results.items():
        summary(label, ratios)
    print(json.dumps({k: [round(r, 4) for r in v] for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
