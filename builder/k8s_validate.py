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


def _builtin(obj: dict[str, Any], version: str) -> list[str]:
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError

    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        return [f"{where or '(top)'}: {exc.message}"]
    except SchemaNotFoundError:
        return [f"no Kubernetes {version} schema for {obj.get('apiVersion')}/{obj.get('kind')}"]
    return []


def validate_object(obj: dict[str, Any], version: str = K8S_VERSION) -> list[str]:
    """Problems of one object (empty when it is valid)."""
    import jsonschema

    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in CRD_FILES:
        return _builtin(obj, version)
    schema = crd_schema(CRD_FILES[key])["schema"]
    problems = [f"{'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
                for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]
    for where, template in _pod_templates(schema, obj):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": template.get("metadata", {}),
               "spec": template.get("spec")}
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
