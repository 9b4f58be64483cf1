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
(the order rotates every call), with identical inputs: preprocessing gets distinct prompts of ~60 tokens;
postprocessing gets 1 token (a streamed chunk) and 64 tokens (a whole response). Per repeat it prints each
model's client-side p50 and the ratio ours/theirs, plus Triton's server-side mean compute time per call
(deltas of `/v2/models/<name>/stats` over the repeat: compute_input + compute_infer + compute_output, each
shown) and its ratio; at the end both ratios with their spread over the repeats.

A third model, `floor_*`, is served and called in the same rotation: a Python model with our config that
returns the same outputs as ours, fixed, doing no work at all. Its ratio to theirs is the best any Python
model with this contract could reach on this Triton: what is left is the Python backend's own cost per call
(the stub round trip, tensors through shared memory) and the gRPC call. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
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


# The benchmark's floor: a Python model that answers with fixed outputs (written into the temporary
# repository at run time; the outputs it sends are listed in its `floor_outputs` parameter).
FLOOR_MODEL = """
import json

import numpy as np
import triton_python_backend_utils as pb_utils

DTYPES = {"TYPE_STRING": np.object_, "TYPE_INT32": np.int32, "TYPE_FP32": np.float32, "TYPE_UINT64": np.uint64}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        names = config["parameters"]["floor_outputs"]["string_value"].split(",")
        self.outputs = []
        for out in config["output"]:
            if out["name"] in names:
                shape = [1] + [d if d > 0 else 1 for d in out["dims"]]
                dtype = DTYPES[out["data_type"]]
                value = np.full(shape, b"x", dtype=dtype) if dtype is np.object_ else np.ones(shape, dtype)
                self.outputs.append((out["name"], value))

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(n, v) for n, v in self.outputs]) for _ in requests]
"""


def add_floor(repo: Path, ours: str, outputs: list[str]) -> None:
    """`floor_<ours>`: our config (batching, instances, tensors) with the do-nothing model above."""
    dst = repo / f"floor_{ours}"
    (dst / "1").mkdir(parents=True)
    config = (repo / ours / "config.pbtxt").read_text()
    config = re.sub(r'^name: "[^"]*"', f'name: "floor_{ours}"', config, flags=re.M)
    config += (
        f'\nparameters: {{\n  key: "floor_outputs"\n  value: {{ string_value: "{",".join(outputs)}" }}\n}}\n'
    )
    (dst / "config.pbtxt").write_text(config)
    (dst / "1" / "model.py").write_text(FLOOR_MODEL)


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
    add_floor(repo, "preprocessing", PRE_OUTPUTS)
    add_floor(repo, "postprocessing", ["OUTPUT", "NUM_OUTPUT_TOKENS"])
    return repo, tokenizer_dir


# What our preprocessing sends for a request without PROMPT_TABLE_EXTRA_ID.
PRE_OUTPUTS = [
    "INPUT_ID",
    "REQUEST_INPUT_LEN",
    "BAD_WORDS_IDS",
    "STOP_WORDS_IDS",
    "OUT_END_ID",
    "OUT_PAD_ID",
    "OUT_REQUEST_OUTPUT_LEN",
    "EMBEDDING_BIAS",
]
STAT_KEYS = ("compute_input", "compute_infer", "compute_output")


def grpc_inputs(grpcclient, arrays: dict[str, np.ndarray]) -> list:
    out = []
    for name, value in arrays.items():
        dtype = "BYTES" if value.dtype == object else "INT32"
        t = grpcclient.InferInput(name, list(value.shape), dtype)
        t.set_data_from_numpy(value)
        out.append(t)
    return out


def server_stats(http_url: str, model: str) -> dict[str, int]:
    """Cumulative ns of each compute phase and the count of successful calls."""
    stats = requests.get(f"{http_url}/v2/models/{model}/stats", timeout=10).json()["model_stats"][0]
    s = stats["inference_stats"]
    out = {k: int(s[k]["ns"]) for k in STAT_KEYS}
    out["count"] = int(s["success"]["count"])
    return out


def compare(
    client, grpcclient, http_url: str, models: list[str], payloads: list[dict], repeats: int
) -> dict[str, list[float]]:
    """Call `models` (ours, theirs, floor) in a rotating order, call by call; per repeat: client p50s and
    server compute means with their ratios to theirs. Returns each ratio series."""
    ours, theirs, floor = models
    series: dict[str, list[float]] = {"client": [], "server": [], "floor client": [], "floor server": []}
    per_rep = len(payloads) // repeats
    for rep in range(repeats):
        times: dict[str, list[float]] = {m: [] for m in models}
        before = {m: server_stats(http_url, m) for m in models}
        for i, arrays in enumerate(payloads[rep * per_rep : (rep + 1) * per_rep]):
            shift = i % len(models)
            for model in models[shift:] + models[:shift]:
                inputs = grpc_inputs(grpcclient, arrays)
                t0 = time.perf_counter()
                client.infer(model, inputs)  # every output, as the ensemble takes them
                times[model].append(time.perf_counter() - t0)
        after = {m: server_stats(http_url, m) for m in models}
        server = {}
        for m in models:
            calls = max(1, after[m]["count"] - before[m]["count"])
            server[m] = {k: (after[m][k] - before[m][k]) / calls / 1e3 for k in STAT_KEYS}  # us per call
        total = {m: sum(server[m].values()) for m in models}
        p50 = {m: statistics.median(times[m]) for m in models}
        series["client"].append(p50[ours] / p50[theirs])
        series["server"].append(total[ours] / total[theirs])
        series["floor client"].append(p50[floor] / p50[theirs])
        series["floor server"].append(total[floor] / total[theirs])

        detail = {
            m: f"{total[m]:.0f} us ({'/'.join(f'{server[m][k]:.0f}' for k in STAT_KEYS)})" for m in models
        }
        print(
            f"  repeat {rep + 1}: client p50 ours {1e3 * p50[ours]:.3f} ms, theirs {1e3 * p50[theirs]:.3f} ms, "
            f"floor {1e3 * p50[floor]:.3f} ms, ratio {series['client'][-1]:.3f} (floor "
            f"{series['floor client'][-1]:.3f}) | server compute per call (input/infer/output) ours "
            f"{detail[ours]}, theirs {detail[theirs]}, floor {detail[floor]}, ratio "
            f"{series['server'][-1]:.3f} (floor {series['floor server'][-1]:.3f}) | load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    return series


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


def spread(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f}, "
        f"{len(values)} repeats)"
    )


def summary(label: str, series: dict[str, list[float]]) -> None:
    print(
        f"{label}: ours/theirs client p50 {spread(series['client'])}; server compute "
        f"{spread(series['server'])}; floor/theirs client {spread(series['floor client'])}, server "
        f"{spread(series['floor server'])}"
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
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
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
            pre_models = ["preprocessing", "backend_preprocessing", "floor_preprocessing"]
            post_models = ["postprocessing", "backend_postprocessing", "floor_postprocessing"]
            for arrays in pre[:20]:  # warm-up
                for m in pre_models:
                    client.infer(m, grpc_inputs(grpcclient, arrays))
            for arrays in post(8)[:20]:
                for m in post_models:
                    client.infer(m, grpc_inputs(grpcclient, arrays))
            results = {}
            print(f"preprocessing (~{len(tokenizer.encode(prompts[0]))}-token prompts):")
            results["preprocessing"] = compare(
                client, grpcclient, srv.http_url, pre_models, pre, args.repeats
            )
            for length in (1, 64):
                print(f"postprocessing ({length} token{'s' if length > 1 else ''} per call):")
                results[f"postprocessing {length}"] = compare(
                    client, grpcclient, srv.http_url, post_models, post(length), args.repeats
                )
            client.close()
    print("in-process decoding (no Triton):")
    decode_work(tokenizer_dir, ids)
    for label, series in results.items():
        summary(label, series)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(json.dumps({k: {s: [round(r, 4) for r in v] for s, v in d.items()} for k, d in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
