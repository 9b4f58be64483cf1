"""Check a Triton model repository before a server starts.

Works on any repository, generated or hand-written: every `config.pbtxt` is parsed as Triton's own
`ModelConfig` protobuf, then the cross-model rules behind the TensorRT-LLM backend's recurring user failures are checked
(unfilled placeholders, ensemble maps, streaming without decoupled mode, engine vs Triton batch size,
memory fractions of engines sharing a GPU, BLS/router targets, models that call themselves).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import text_format

from tritonforge.ensembles.triton_schema import model_config_pb2 as mc

if TYPE_CHECKING:
    # The generated module makes its classes at import time (protobuf's builder), where mypy cannot see them.
    ModelConfig = Any
else:
    ModelConfig = mc.ModelConfig

ENGINE_BACKENDS = {"tensorrtllm"}
TARGET_PARAM_SUFFIX = "_model"


@dataclass(frozen=True)
class Problem:
    model: str
    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.model}: {self.field}: {self.message}; {self.fix}"


def _dtype_name(value: int) -> str:
    return mc.DataType.Name(value)


def load_configs(repo: Path) -> tuple[dict[str, ModelConfig], list[Problem]]:
    """Parse every model's config.pbtxt; problems for those that do not parse."""
    configs: dict[str, ModelConfig] = {}
    problems: list[Problem] = []
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        cfg_path = model_dir / "config.pbtxt"
        if not cfg_path.is_file():
            problems.append(
                Problem(
                    model_dir.name, "config.pbtxt", "missing", "add a config.pbtxt or remove the directory"
                )
            )
            continue
        text = cfg_path.read_text(encoding="utf-8", errors="replace")
        # The backend's tools/fill_template.py fills `${name}` with string.Template.safe_substitute, which
        # leaves a placeholder it was not given in the file silently (https://github.com/
        # triton-inference-server/tensorrtllm_backend/blob/main/tools/fill_template.py).
        if "${" in text:
            start = text.index("${")
            placeholder = text[start : text.find("}", start) + 1]
            problems.append(
                Problem(
                    model_dir.name,
                    "config.pbtxt",
                    f"unfilled placeholder {placeholder}",
                    "fill every template value; `tritonforge emit` never leaves one",
                )
            )
            continue
        cfg = mc.ModelConfig()
        try:
            text_format.Parse(text, cfg)
        except text_format.ParseError as exc:
            problems.append(
                Problem(
                    model_dir.name,
                    "config.pbtxt",
                    f"does not parse as ModelConfig ({exc})",
                    "fix the protobuf text syntax or the field name",
                )
            )
            continue
        if cfg.name and cfg.name != model_dir.name:
            problems.append(
                Problem(
                    model_dir.name,
                    "name",
                    f"config says {cfg.name!r} but the directory is {model_dir.name!r}",
                    "make them equal",
                )
            )
        configs[model_dir.name] = cfg
    return configs, problems


def _params(cfg: ModelConfig) -> dict[str, str]:
    return {k: v.string_value for k, v in cfg.parameters.items()}


def _tensor_types(tensors: Iterable[Any]) -> dict[str, int]:
    return {t.name: t.data_type for t in tensors}


def _check_files(repo: Path, name: str, cfg: ModelConfig) -> list[Problem]:
    out = []
    versions = [p for p in (repo / name).iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        out.append(Problem(name, "version", "no numeric version directory (e.g. 1/)", "create <model>/1/"))
    if cfg.backend == "python":
        if not any((v / "model.py").is_file() for v in versions):
            out.append(
                Problem(
                    name,
                    "1/model.py",
                    "python backend model has no model.py",
                    "add model.py to the version directory",
                )
            )
    return out


def _check_ensemble(name: str, cfg: ModelConfig, configs: dict[str, ModelConfig]) -> list[Problem]:
    out: list[Problem] = []
    available = _tensor_types(cfg.input)  # ensemble tensor -> dtype known so far
    producers: dict[str, int] = {}
    for i, step in enumerate(cfg.ensemble_scheduling.step):
        where = f"ensemble_scheduling.step[{i}]"
        target = configs.get(step.model_name)
        if target is None:
            out.append(
                Problem(
                    name,
                    where,
                    f"model {step.model_name!r} is not in the repository",
                    "add it or fix model_name",
                )
            )
            continue
        if cfg.max_batch_size > 0 and target.max_batch_size < cfg.max_batch_size:
            out.append(
                Problem(
                    name,
                    f"{where}.max_batch_size",
                    f"ensemble max_batch_size {cfg.max_batch_size} exceeds {step.model_name}'s {target.max_batch_size}",
                    "give every step model a max_batch_size at least the ensemble's",
                )
            )
        inputs = _tensor_types(target.input)
        outputs = _tensor_types(target.output)
        for key, value in step.input_map.items():
            if key not in inputs:
                out.append(
                    Problem(
                        name,
                        f"{where}.input_map[{key}]",
                        f"{step.model_name} has no input {key!r}",
                        f"use one of {', '.join(sorted(inputs))}",
                    )
                )
                continue
            src = available.get(value, producers.get(value))
            if src is None:
                out.append(
                    Problem(
                        name,
                        f"{where}.input_map[{key}]",
                        f"ensemble tensor {value!r} is neither an ensemble input nor an earlier step output",
                        "map it from an ensemble input or an earlier step's output_map",
                    )
                )
            elif src != inputs[key]:
                out.append(
                    Problem(
                        name,
                        f"{where}.input_map[{key}]",
                        f"type mismatch: {value!r} is {_dtype_name(src)} but {step.model_name}.{key} is {_dtype_name(inputs[key])}",
                        "make the data types equal",
                    )
                )
        for key in inputs:
            t = next(t for t in target.input if t.name == key)
            if key not in step.input_map and not t.optional:
                out.append(
                    Problem(
                        name,
                        f"{where}.input_map",
                        f"required input {step.model_name}.{key} is not mapped",
                        "map it or mark it optional in the model",
                    )
                )
        for key, value in step.output_map.items():
            if key not in outputs:
                out.append(
                    Problem(
                        name,
                        f"{where}.output_map[{key}]",
                        f"{step.model_name} has no output {key!r}",
                        f"use one of {', '.join(sorted(outputs))}",
                    )
                )
                continue
            producers[value] = outputs[key]
    for t in cfg.output:
        if t.name not in producers:
            out.append(
                Problem(
                    name,
                    f"output[{t.name}]",
                    "no step produces this ensemble output",
                    "add it to a step's output_map",
                )
            )
        elif producers[t.name] != t.data_type:
            out.append(
                Problem(
                    name,
                    f"output[{t.name}]",
                    f"declared {_dtype_name(t.data_type)} but produced as {_dtype_name(producers[t.name])}",
                    "make the data types equal",
                )
            )
    # Streaming needs a decoupled engine: `decoupled_mode` "must be set to true for requests setting the
    # stream tensor to true" (https://github.com/triton-inference-server/tensorrtllm_backend/blob/main/docs/
    # model_config.md, tensorrt_llm model).
    for step in cfg.ensemble_scheduling.step:
        target = configs.get(step.model_name)
        if target is None:
            continue
        if (
            step.input_map.get("streaming")
            and not target.model_transaction_policy.decoupled
            and _params(cfg).get("streaming") != "false"
        ):  # tritonforge's non-streaming configuration
            out.append(
                Problem(
                    step.model_name,
                    "model_transaction_policy.decoupled",
                    f"ensemble {name} maps '{step.input_map['streaming']}' to streaming but the model is not decoupled, so stream=true requests fail",
                    "set model_transaction_policy { decoupled: true }",
                )
            )
    return out


def _check_engine(repo: Path, name: str, cfg: ModelConfig) -> list[Problem]:
    out: list[Problem] = []
    p = _params(cfg)
    engine_dir = p.get("gpt_model_path", "")
    is_cpu = cfg.backend == "python"
    if not engine_dir and is_cpu:
        return out  # optional in a Python model (the backend's preprocessing reads it only for multimodal models)
    if not engine_dir:
        out.append(
            Problem(
                name,
                "parameters.gpt_model_path",
                "empty",
                "point it at the engine directory",
            )
        )
        return out
    # KIND_GPU makes Triton create one instance per visible GPU while the backend ignores Triton's device
    # id, so several executors land on one GPU: the backend places engines with `gpu_device_ids` ("if not
    # provided, the model will use all visible GPUs"; tensorrtllm_backend docs/model_config.md, URL above).
    if not is_cpu and any(g.kind == mc.ModelInstanceGroup.KIND_GPU for g in cfg.instance_group):
        out.append(
            Problem(
                name,
                "instance_group",
                "kind KIND_GPU starts one executor per visible GPU",
                "use instance_group [{kind: KIND_CPU, count: 1}] and place it with parameters.gpu_device_ids",
            )
        )
    frac = p.get("kv_cache_free_gpu_mem_fraction")
    if frac:
        try:
            f = float(frac)
            if not 0 < f <= 1:
                raise ValueError
        except ValueError:
            out.append(
                Problem(
                    name,
                    "parameters.kv_cache_free_gpu_mem_fraction",
                    f"{frac!r} is not in (0, 1]",
                    "use e.g. 0.9",
                )
            )
    if is_cpu:
        cpu_mbs = p.get("cpu_max_batch_size")
        if cpu_mbs and int(cpu_mbs) != cfg.max_batch_size:
            out.append(
                Problem(
                    name,
                    "max_batch_size",
                    f"Triton max_batch_size {cfg.max_batch_size} != engine max batch {cpu_mbs}",
                    "make them equal (tensorrtllm_backend #130)",
                )
            )
        if not (Path(engine_dir) / "config.json").is_file():
            out.append(
                Problem(
                    name,
                    "parameters.gpt_model_path",
                    f"{engine_dir} has no config.json",
                    "point it at the checkpoint directory (re-run `tritonforge emit`)",
                )
            )
        return out
    cfg_json = Path(engine_dir) / "config.json"
    if cfg_json.is_file():  # checkable only where the engine is (a GPU host or mounted build dir)
        try:
            build = json.loads(cfg_json.read_text()).get("build_config", {})
        except json.JSONDecodeError:
            out.append(
                Problem(
                    name, "parameters.gpt_model_path", f"{cfg_json} is not valid JSON", "rebuild the engine"
                )
            )
            return out
        engine_mbs = build.get("max_batch_size")
        if engine_mbs is not None and int(engine_mbs) != cfg.max_batch_size:
            out.append(
                Problem(
                    name,
                    "max_batch_size",
                    f"Triton max_batch_size {cfg.max_batch_size} != engine max_batch_size {engine_mbs}",
                    "set them equal (tensorrtllm_backend #130); `tritonforge emit --build-dir` does",
                )
            )
        if (
            p.get("enable_kv_cache_reuse") == "true"
            and build.get("plugin_config", {}).get("use_paged_context_fmha") is False
        ):
            out.append(
                Problem(
                    name,
                    "parameters.enable_kv_cache_reuse",
                    "the engine was built without paged context FMHA",
                    "rebuild with --use_paged_context_fmha enable or set enable_kv_cache_reuse false",
                )
            )
    return out


def _check_targets(name: str, cfg: ModelConfig, configs: dict[str, ModelConfig]) -> list[Problem]:
    out: list[Problem] = []
    p = _params(cfg)
    for key, value in p.items():
        if key.endswith(TARGET_PARAM_SUFFIX) and value and value not in configs:
            out.append(
                Problem(
                    name,
                    f"parameters.{key}",
                    f"model {value!r} is not in the repository",
                    "add it or fix the name",
                )
            )
    if "entry_config" in p:
        try:
            entry = json.loads(p["entry_config"])
        except json.JSONDecodeError as exc:
            return [
                Problem(
                    name,
                    "parameters.entry_config",
                    f"not valid JSON ({exc.msg})",
                    "re-run `tritonforge emit`",
                )
            ]
        for tier in entry.get("tiers", []):
            if tier.get("kind") == "local" and tier.get("model") not in configs:
                out.append(
                    Problem(
                        name,
                        "parameters.entry_config.tiers",
                        f"tier {tier.get('name')!r} calls {tier.get('model')!r}, which is not in the repository",
                        "add the tier's models or fix the tier",
                    )
                )
    return out


def _targets(cfg: ModelConfig) -> list[tuple[str, str]]:
    """(field, model) for every model this one calls: ensemble steps, BLS `*_model` parameters and the
    `llm` entry's local tiers."""
    out = [
        (f"ensemble_scheduling.step[{i}].model_name", s.model_name)
        for i, s in enumerate(cfg.ensemble_scheduling.step)
    ]
    p = _params(cfg)
    out += [(f"parameters.{k}", v) for k, v in sorted(p.items()) if k.endswith(TARGET_PARAM_SUFFIX) and v]
    try:
        entry = json.loads(p.get("entry_config") or "{}")
    except json.JSONDecodeError:
        entry = {}
    tiers = entry.get("tiers", []) if isinstance(entry, dict) else []
    for tier in tiers if isinstance(tiers, list) else []:
        if isinstance(tier, dict) and tier.get("kind") == "local" and isinstance(tier.get("model"), str):
            out.append((f"parameters.entry_config.tiers[{tier.get('name')!r}]", tier["model"]))
    return out


def _check_cycles(configs: dict[str, ModelConfig]) -> list[Problem]:
    """A model that calls itself, directly or through others, recurses until the server runs out of
    instances or memory; Triton's own checks catch this only for ensembles, and only when loading."""
    graph = {name: _targets(cfg) for name, cfg in configs.items()}
    out: list[Problem] = []
    for name, edges in graph.items():
        for where, target in edges:
            if target == name:
                out.append(
                    Problem(
                        name,
                        where,
                        f"calls {name!r}, the model itself, so every request would recurse",
                        "point it at another model (e.g. the tier's ensemble)",
                    )
                )
    reported: set[frozenset[str]] = set()
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for _, nxt in graph.get(node, []):
                if nxt == start and len(path) > 1 and frozenset(path) not in reported:
                    reported.add(frozenset(path))
                    loop = " -> ".join([*path, start])
                    out.append(
                        Problem(
                            start,
                            "targets",
                            f"models call each other in a loop ({loop})",
                            "break the loop: a tier or step must call a model that does not call back",
                        )
                    )
                elif nxt in graph and nxt not in path:
                    stack.append((nxt, [*path, nxt]))
    return out


def _check_shared_gpu(configs: dict[str, ModelConfig]) -> list[Problem]:
    """Engines on the same GPU must leave room for each other.

    `kv_cache_free_gpu_mem_fraction` is a fraction of the GPU memory free after the model loads (default 0.9:
    tensorrtllm_backend docs/model_config.md, https://github.com/triton-inference-server/tensorrtllm_backend/
    blob/main/docs/model_config.md), so a second engine on the GPU needs the first one to leave room."""
    by_gpu: dict[str, list[tuple[str, float]]] = {}
    for name, cfg in configs.items():
        if cfg.backend not in ENGINE_BACKENDS:
            continue
        p = _params(cfg)
        if p.get("max_tokens_in_paged_kv_cache"):
            # A pool capped in tokens takes at most that, whatever the load order; fractions do not add up.
            continue
        frac = float(p.get("kv_cache_free_gpu_mem_fraction") or 0.9)
        for gpu in (p.get("gpu_device_ids") or "0").split(";")[0].split(","):
            by_gpu.setdefault(gpu.strip() or "0", []).append((name, frac))
    out = []
    for gpu, engines in sorted(by_gpu.items()):
        total = sum(f for _, f in engines)
        if len(engines) > 1 and total > 0.95:
            names = ", ".join(f"{n}={f}" for n, f in engines)
            out.append(
                Problem(
                    engines[-1][0],
                    "parameters.kv_cache_free_gpu_mem_fraction",
                    f"engines on GPU {gpu} take {total:.2f} of free memory together ({names})",
                    "lower the fractions so they sum to at most 0.95, or set gpu_device_ids apart",
                )
            )
    return out


def validate_repository(repo: Path) -> list[Problem]:
    """All problems found in the repository at `repo` (empty list: it is fine)."""
    repo = Path(repo)
    if not repo.is_dir():
        return [Problem(str(repo), "repository", "not a directory", "pass the path of a model repository")]
    configs, problems = load_configs(repo)
    if not configs and not problems:
        return [
            Problem(str(repo), "repository", "contains no models", "run `tritonforge emit SPEC -o DIR` first")
        ]
    for name, cfg in configs.items():
        problems += _check_files(repo, name, cfg)
        if cfg.platform == "ensemble":
            problems += _check_ensemble(name, cfg, configs)
        if cfg.backend in ENGINE_BACKENDS or "gpt_model_path" in cfg.parameters:
            problems += _check_engine(repo, name, cfg)
        problems += _check_targets(name, cfg, configs)
    problems += _check_cycles(configs)
    problems += _check_shared_gpu(configs)
    return problems
