"""Check rendered Kubernetes objects without a cluster.

Built-in kinds: the Kubernetes OpenAPI schemas shipped by PyPI `kubernetes-validate`
(https://github.com/willthames/kubernetes-validate), strict (unknown fields are errors, as
`kubectl apply --validate=strict`). CRDs: the published CRD schemas, reduced to what is needed and checked in
next to this file (k8s_crd_*.json, each naming its source): LeaderWorkerSet from kubernetes-sigs/lws and
ServiceMonitor from prometheus-operator; a LeaderWorkerSet's pod templates are checked as Kubernetes Pods.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

K8S_VERSION = "1.31"  # the oldest Kubernetes the manifests target (LeaderWorkerSet needs >= 1.26)
CRD_FILES = {
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): "k8s_crd_leaderworkerset.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "k8s_crd_servicemonitor.json",
}
POD_MARK = "x-tritonforge-pod-template"


def available() -> bool:
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def crd_schema(filename: str) -> dict[str, Any]:
    return json.loads((Path(__file__).parent / filename).read_text())


def _pod_templates(schema: dict[str, Any], obj: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path, value) of every part of `obj` the CRD schema marks as a pod template."""
    if not isinstance(schema, dict) or not isinstance(obj, dict):
        return []
    if schema.get(POD_MARK):
        return [(path, obj)]
    out = []
    for key, sub in (schema.get("properties") or {}).items():
        if key in obj:
            out += _pod_templates(sub, obj[key], f"{path}.{key}" if path else key)
    return out


@functools.cache
def _schema_dir(version: str) -> Path:
    """kubernetes-validate's strict schemas of the newest Kubernetes release not newer than `version`."""
    import kubernetes_validate

    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    wanted = tuple(int(x) for x in version.split(".")[:2])
    found = sorted(
        (tuple(int(x) for x in d.name[1:].split("-")[0].split(".")[:2]), d)
        for d in root.iterdir()
        if d.name.endswith("-local-strict")
    )
    usable = [d for v, d in found if v <= wanted]
    if not usable:
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {version}")
    return usable[-1]


@functools.cache
def _validator(version: str, api_version: str, kind: str) -> Any:
    """A JSON-schema validator for one kind (schema files read once per process, not once per object)."""
    import jsonschema
    from referencing import Registry, Resource

    group, _, ver = api_version.rpartition("/")
    name = f"{kind.lower()}-{group.split('.')[0] + '-' if group else ''}{ver}.json"
    path = _schema_dir(version) / name
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    # Both files carry their own $id (https://kubernetes.io/api/...), under which the registry holds them.
    registry = Resource.from_contents(_definitions(version)) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


@functools.cache
def _definitions(version: str) -> dict[str, Any]:
    return json.loads((_schema_dir(version) / "_definitions.json").read_text())


def _builtin(obj: dict[str, Any], version: str) -> list[str]:
    validator = _validator(version, str(obj.get("apiVersion")), str(obj.get("kind")))
    if validator is None:
        return [f"no Kubernetes {version} schema for {obj.get('apiVersion')}/{obj.get('kind')}"]
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
        for e in validator.iter_errors(obj)
    ]


def validate_object(obj: dict[str, Any], version: str = K8S_VERSION) -> list[str]:
    """Problems of one object (empty when it is valid)."""
    import jsonschema

    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in CRD_FILES:
        return _builtin(obj, version)
    schema = crd_schema(CRD_FILES[key])["schema"]
    problems = [
        f"{'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(obj)
    ]
    for where, template in _pod_templates(schema, obj):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": template.get("metadata", {}),
            "spec": template.get("spec"),
        }
        problems += [f"{where}.{p}" for p in _builtin(pod, version)]
        extra = sorted(set(template) - {"metadata", "spec"})
        if extra:
            problems.append(f"{where}: unknown field(s) {', '.join(extra)} in a pod template")
    return problems


def validate_objects(objs: list[tuple[str, dict[str, Any]]], version: str = K8S_VERSION) -> list[str]:
    """`file: Kind/name: problem` for every problem of (file, object) pairs."""
    out = []
    for file, obj in objs:
        name = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
        out += [f"{file}: {name}: {p}" for p in validate_object(obj, version)]
    return out


# ------------------------------------------------------------------ kustomizations, checked without kubectl


def _pointer(doc: Any, path: str) -> tuple[Any, str]:
    """The parent of a JSON pointer (RFC 6901) target and its last key; KeyError when the parent is missing."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]
    node = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, parts[-1]


def apply_json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """`add` / `replace` / `remove` operations (the ones tritonforge writes) applied to a copy of `doc`."""
    import copy

    out = copy.deepcopy(doc)
    for op in ops:
        parent, key = _pointer(out, op["path"])
        if isinstance(parent, list):
            index = len(parent) if key == "-" else int(key)
            if op["op"] == "add":
                parent.insert(index, op["value"])
            elif op["op"] == "replace":
                parent[index] = op["value"]
            else:
                del parent[index]
        elif op["op"] in ("add", "replace"):
            if op["op"] == "replace" and key not in parent:
                raise KeyError(key)
            parent[key] = op["value"]
        else:
            del parent[key]
    return out


def _load(files: dict[str, bytes], path: str) -> list[Any]:
    import yaml

    return [d for d in yaml.safe_load_all(files[path]) if d is not None]


def render_kustomization(files: dict[str, bytes], folder: str) -> tuple[list[dict[str, Any]], list[str]]:
    """What `kubectl kustomize folder` renders, for the features tritonforge uses (resources, namespace,
    JSON patches by target, configMapGenerator), and the problems found on the way. Generated ConfigMap
    names keep no hash suffix here."""
    problems: list[str] = []
    kpath = f"{folder}/kustomization.yaml"
    if kpath not in files:
        return [], [f"{kpath}: missing"]
    k = _load(files, kpath)[0]
    if k.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or k.get("kind") != "Kustomization":
        problems.append(f"{kpath}: not a kustomize.config.k8s.io/v1beta1 Kustomization")
    allowed = {"apiVersion", "kind", "namespace", "resources", "patches", "configMapGenerator"}
    problems += [f"{kpath}: unexpected field {f}" for f in sorted(set(k) - allowed)]
    objs: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        rel = _join(folder, res)
        if f"{rel}/kustomization.yaml" in files:
            sub, more = render_kustomization(files, rel)
            objs += sub
            problems += more
        elif rel in files:
            objs += _load(files, rel)
        else:
            problems.append(f"{kpath}: resource {res} does not exist")
    for gen in k.get("configMapGenerator", []):
        data = {}
        for f in gen.get("files", []):
            if _join(folder, f) not in files:
                problems.append(f"{kpath}: configMapGenerator file {f} does not exist")
            else:
                data[f] = files[_join(folder, f)].decode()
        objs.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data}
        )
    for patch in k.get("patches", []):
        t = patch.get("target", {})
        pfile = _join(folder, patch.get("path", ""))
        if pfile not in files:
            problems.append(f"{kpath}: patch {patch.get('path')} does not exist")
            continue
        hits = [
            i
            for i, o in enumerate(objs)
            if o.get("kind") == t.get("kind")
            and o.get("metadata", {}).get("name") == t.get("name")
            and _group_version(o) == (t.get("group", ""), t.get("version", _group_version(o)[1]))
        ]
        if len(hits) != 1:
            problems.append(
                f"{kpath}: patch target {t.get('kind')}/{t.get('name')} matches {len(hits)} objects"
            )
            continue
        try:
            objs[hits[0]] = apply_json_patch(objs[hits[0]], _load(files, pfile)[0])
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            problems.append(f"{pfile}: does not apply to {t.get('kind')}/{t.get('name')} ({exc!r})")
    if k.get("namespace"):
        for o in objs:
            if o.get("kind") != "Namespace":
                o.setdefault("metadata", {})["namespace"] = k["namespace"]
    return objs, problems


def _group_version(obj: dict[str, Any]) -> tuple[str, str]:
    api = str(obj.get("apiVersion", ""))
    group, _, version = api.rpartition("/")
    return group, version


def _join(folder: str, rel: str) -> str:
    parts: list[str] = folder.split("/") if folder else []
    for p in rel.split("/"):
        if p == "..":
            parts.pop()
        elif p not in ("", "."):
            parts.append(p)
    return "/".join(parts)
