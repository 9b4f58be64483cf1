"""`tritonforge deploy k8s`: schemas, kustomize, the launch shared with `serve --docker`, spec checks, goldens."""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tritonforge.builder.spec import load_spec
from tritonforge.ensembles import k8s_validate
from tritonforge.ensembles.k8s import K8sOptions, objects, plan_k8s, render_k8s

from .conftest import EXAMPLES, tiny_variant

GOLDEN = Path(__file__).parent / "fixtures" / "k8s_golden"
KUBECTL = shutil.which("kubectl")
needs_validate = pytest.mark.skipif(not k8s_validate.available(), reason="kubernetes-validate not installed")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl not installed (kustomize rendering not checked)"
)
ALL_EXAMPLES = sorted(p.name for p in EXAMPLES.glob("*.yaml"))


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tritonforge", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def _render(spec_path: Path, **opts: str) -> dict[str, bytes]:
    return render_k8s(plan_k8s(load_spec(spec_path), K8sOptions(**opts)))


def _spec(tmp_path: Path, extra: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text((EXAMPLES / "llama3.1-70b-fp8-tp2-draft-h100.yaml").read_text() + extra)
    return p


def _one(objs: list[tuple[str, dict]], kind: str) -> dict:
    found = [o for _, o in objs if o["kind"] == kind]
    assert len(found) == 1, [o["kind"] for _, o in objs]
    return found[0]


def _kustomize(folder: Path) -> list[dict]:
    out = subprocess.run([KUBECTL, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


# ------------------------------------------------------------------------------------------ schemas


@needs_validate
@pytest.mark.parametrize("example", ALL_EXAMPLES)
def test_every_example_validates(example: str) -> None:
    objs = objects(_render(EXAMPLES / example, registry="registry.example.com/ml"))
    assert {
        "Deployment",
        "Service",
        "Job",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "PersistentVolumeClaim",
    } <= {o["kind"] for _, o in objs}
    assert k8s_validate.validate_objects(objs) == []


@needs_validate
def test_validation_catches_a_broken_object() -> None:
    objs = objects(_render(EXAMPLES / "cpu-demo.yaml"))
    deployment = copy.deepcopy(_one(objs, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    assert any("containerPort" in p for p in k8s_validate.validate_object(deployment))
    typo = copy.deepcopy(_one(objs, "Deployment"))
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert k8s_validate.validate_object(typo)
    monitor = copy.deepcopy(_one(objs, "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    assert any("intervall" in p for p in k8s_validate.validate_object(monitor))


@needs_validate
def test_multi_node_replica_is_a_leaderworkerset(tmp_path: Path) -> None:
    """TP8 x PP2 = 16 GPUs on 8-GPU nodes: a LeaderWorkerSet group of 2 pods with 8 GPUs each."""
    data = yaml.safe_load((EXAMPLES / "llama3.1-8b-fp8-h100.yaml").read_text())
    data["tiers"][0]["gpu"]["count"] = 16
    data["tiers"][0]["parallelism"] = {"tp": 8, "pp": 2}
    spec = tmp_path / "lws.yaml"
    spec.write_text(yaml.safe_dump(data))
    files = _render(spec)
    objs = objects(files)
    lws = _one(objs, "LeaderWorkerSet")
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert k8s_validate.validate_objects(objs) == []
    broken = copy.deepcopy(lws)
    broken["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["imagee"] = "x"
    assert any("imagee" in p for p in k8s_validate.validate_object(broken))
    broken = copy.deepcopy(lws)
    broken["spec"]["leaderWorkerTemplate"]["sise"] = 2
    assert any("sise" in p for p in k8s_validate.validate_object(broken))
    patch = yaml.safe_load(files["overlays/gpu/server-patch.yaml"])
    gpus = {
        op["path"]: op["value"]["limits"]["nvidia.com/gpu"]
        for op in patch
        if op["path"].endswith("/resources")
    }
    assert gpus == {
        "/spec/leaderWorkerTemplate/leaderTemplate/spec/containers/0/resources": "8",
        "/spec/leaderWorkerTemplate/workerTemplate/spec/containers/0/resources": "8",
    }


# ------------------------------------------------------------------------------------------ kustomize


@needs_kubectl
@needs_validate
@pytest.mark.parametrize(
    "example,overlay",
    [
        ("cpu-demo.yaml", "cpu-demo"),
        ("cascade-h100.yaml", "gpu"),
        ("llama3.1-70b-fp8-tp2-draft-h100.yaml", "gpu"),
    ],
)
def test_kustomize_renders_and_validates(tmp_path: Path, example: str, overlay: str) -> None:
    out = tmp_path / "k8s"
    proc = _cli("deploy", "k8s", str(EXAMPLES / example), "-o", str(out), "--namespace", "llm", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["schema_checked"] is True
    docs = _kustomize(out / "overlays" / overlay)
    assert all(d["metadata"].get("namespace") == "llm" for d in docs if d["kind"] != "Namespace")
    assert k8s_validate.validate_objects([("kustomize", d) for d in docs]) == []
    server = next(
        d
        for d in docs
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"].get("app.kubernetes.io/component") == "server"
    )
    container = server["spec"]["template"]["spec"]["containers"][0]
    store = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    if overlay == "gpu":
        assert (
            container["resources"]["limits"]["nvidia.com/gpu"]
            == container["resources"]["requests"]["nvidia.com/gpu"]
        )
        assert store["spec"]["accessModes"] == ["ReadWriteMany"]  # replicas on many nodes read the engines
    else:
        assert store["spec"]["accessModes"] == ["ReadWriteOnce"]  # what kind/minikube provision
        assert "nvidia.com/gpu" not in json.dumps(container["resources"])
        assert set(container["resources"]["limits"]) == {"cpu", "memory"}
    # The spec ConfigMap's generated name is what the build Job mounts.
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    job = next(d for d in docs if d["kind"] == "Job")
    assert {v.get("configMap", {}).get("name") for v in job["spec"]["template"]["spec"]["volumes"]} >= {
        cm["metadata"]["name"]
    }
    load = _kustomize(out / "loadtest")
    assert k8s_validate.validate_objects([("kustomize", d) for d in load]) == []


# --------------------------------------------------------------------- one launch for docker and k8s


def _docker_print(repo: Path, image: str) -> list[str]:
    # --no-build: the cluster's image is built from deploy k8s's image/ Dockerfile, not the repository's.
    proc = _cli("serve", str(repo), "--docker", image, "--no-build", "--print")
    assert proc.returncode == 0, proc.stderr
    return shlex.split(proc.stdout.strip())


@pytest.mark.parametrize(
    "example", ["cpu-demo.yaml", "llama3.1-70b-fp8-tp2-draft-h100.yaml", "cascade-h100.yaml"]
)
def test_replica_command_is_serve_docker_print(tmp_path: Path, example: str) -> None:
    """The replica's container runs exactly what `serve --docker IMAGE --print` runs after the image."""
    from tritonforge.ensembles.render import emit_files, write_repository

    spec_path = tiny_variant(example, tmp_path) if example == "cpu-demo.yaml" else EXAMPLES / example
    spec = load_spec(spec_path)
    plan = plan_k8s(spec, K8sOptions(registry="registry.example.com/ml"))
    from tests.helpers.builds import fake_build  # serve refuses engines that were never built

    files, _ = emit_files(
        spec, spec_path.parent, None if example == "cpu-demo.yaml" else fake_build(example, tmp_path)
    )
    write_repository(files, tmp_path / "repo")
    docker = _docker_print(tmp_path / "repo", plan.image)
    after_image = docker[docker.index(plan.image) + 1 :]
    deployment = _one(objects(render_k8s(plan)), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == after_image
    # `-e NAME=VALUE` pairs, and `-e NAME` for secrets passed by name (in the pod: a secretKeyRef, no value).
    docker_env = dict(
        (docker[i + 1].split("=", 1) + [None])[:2]  # type: ignore[list-item]
        for i, a in enumerate(docker[: docker.index(plan.image)])
        if a == "-e"
    )
    pod_env = {e["name"]: e.get("value") for e in container["env"]}
    assert docker_env.items() <= pod_env.items()
    for name, value in docker_env.items():
        if value is None:
            (entry,) = [e for e in container["env"] if e["name"] == name]
            assert "secretKeyRef" in entry["valueFrom"]
    shm = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "dshm")
    assert f"--shm-size={spec.triton.shm_size}" in docker
    assert shm["emptyDir"] == {
        "medium": "Memory",
        "sizeLimit": spec.triton.shm_size.upper().replace("G", "Gi"),
    }


# -------------------------------------------------------------------------------- what is rendered


def test_probes_ports_and_gpu_requests() -> None:
    files = _render(EXAMPLES / "llama3.1-70b-fp8-tp2-draft-h100.yaml")
    objs = objects(files, "base")
    pod = _one(objs, "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # GPU engines load for minutes
    svc = next(o for _, o in objs if o["kind"] == "Service")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    patch = yaml.safe_load(files["overlays/gpu/server-patch.yaml"])
    res = next(op["value"] for op in patch if op["path"].endswith("/resources"))
    assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"] == "2"  # TP2
    # Engines come from the store the build Job fills once per spec hash; never built per pod.
    plan = plan_k8s(load_spec(EXAMPLES / "llama3.1-70b-fp8-tp2-draft-h100.yaml"), K8sOptions())
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/models"]["subPath"] == f"{plan.spec_hash}/repo" and mounts["/models"]["readOnly"] is True
    assert "tritonforge build" not in json.dumps(pod)
    job = _one(objs, "Job")
    assert job["metadata"]["name"].endswith(plan.short_hash)
    assert "tritonforge build /spec/spec.yaml" in job["spec"]["template"]["spec"]["containers"][0]["args"][0]


def test_redis_shared_and_keys_by_secret_reference(tmp_path: Path) -> None:
    spec = tmp_path / "c.yaml"
    data = yaml.safe_load((EXAMPLES / "cascade-h100.yaml").read_text())
    data["router"]["remote"] = [
        {
            "name": "api",
            "kind": "openai",
            "url": "https://api.example.com/v1",
            "model": "m",
            "api_key_env": "OPENAI_API_KEY",
        }
    ]
    data["cache"]["hmac_key_env"] = "TF_CACHE_HMAC"
    spec.write_text(yaml.safe_dump(data))
    files = _render(spec)
    objs = objects(files)
    sts = _one(objs, "StatefulSet")
    assert sts["spec"]["template"]["spec"]["containers"][0]["args"] == ["--save", "", "--appendonly", "no"]
    built = yaml.safe_load(files["base/spec.yaml"])
    assert built["cache"]["redis_url"] == f"redis://{sts['metadata']['name']}:6379/0"
    env = _one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert refs == {
        "OPENAI_API_KEY": {"name": "cascade-h100-secrets", "key": "OPENAI_API_KEY"},
        "TF_CACHE_HMAC": {"name": "cascade-h100-secrets", "key": "TF_CACHE_HMAC"},
    }
    assert not any(o["kind"] == "Secret" for _, o in objs)
    # An external Redis: no StatefulSet, and the build uses that URL.
    data["deploy"] = {"redis_url": "redis://redis.shared.svc:6379/3"}
    spec.write_text(yaml.safe_dump(data))
    files = _render(spec)
    assert not any(o["kind"] == "StatefulSet" for _, o in objects(files))
    assert yaml.safe_load(files["base/spec.yaml"])["cache"]["redis_url"] == "redis://redis.shared.svc:6379/3"


def test_network_policy_admits_only_clients_and_prometheus() -> None:
    objs = objects(_render(EXAMPLES / "cpu-demo.yaml"))
    pol = _one(objs, "NetworkPolicy")
    rules = pol["spec"]["ingress"]
    clients = rules[0]
    assert clients["from"] == [{"podSelector": {"matchLabels": {"tritonforge.io/client-of": "cpu-demo"}}}]
    assert {p["port"] for p in clients["ports"]} == {"http", "grpc"}
    assert {p["port"] for p in rules[1]["ports"]} == {"metrics"}
    # The Locust workers send the requests: they carry the client label; the master sends none.
    load = {o["metadata"]["name"]: o for _, o in objects(_render(EXAMPLES / "cpu-demo.yaml"), "loadtest")}
    workers, master = load["cpu-demo-loadtest-workers"], load["cpu-demo-loadtest"]
    assert workers["spec"]["template"]["metadata"]["labels"]["tritonforge.io/client-of"] == "cpu-demo"
    assert "tritonforge.io/client-of" not in master["spec"]["template"]["metadata"]["labels"]
    script = master["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "--host http://cpu-demo-ensemble:8000" in script and "--model ensemble" in script
    assert "--expect-workers 2" in script and '--html "$OUT/locust.html"' in script
    assert {m["mountPath"] for m in master["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]} >= {
        "/reports"
    }


def test_hpa_replicas_from_spec(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path, "deploy: {replicas: {min: 2, max: 6}, autoscale: {metric: queue_time, target: 0.5}}\n"
    )
    objs = objects(_render(spec))
    hpa = _one(objs, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "500m"
    assert "replicas" not in _one(objs, "Deployment")["spec"]  # the HPA owns it
    spec = _spec(tmp_path, "deploy: {replicas: {min: 3, max: 3}}\n")
    objs = objects(_render(spec))
    assert not any(o["kind"] == "HorizontalPodAutoscaler" for _, o in objs)
    assert _one(objs, "Deployment")["spec"]["replicas"] == 3


def test_deploy_section_does_not_change_the_spec_hash(tmp_path: Path) -> None:
    """Replicas and placement do not change the repository, so its engines are reused."""
    a = load_spec(EXAMPLES / "llama3.1-70b-fp8-tp2-draft-h100.yaml")
    b = load_spec(_spec(tmp_path, "deploy: {replicas: {min: 2, max: 9}, node_selector: {pool: h100}}\n"))
    assert a.spec_hash() == b.spec_hash()
    assert a.deploy != b.deploy


# ----------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "extra,needle",
    [
        ("deploy: {replicas: {min: 4, max: 2}}\n", "replicas.min 4 is above replicas.max 2"),
        ("deploy: {gpus_per_node: 1, multi_node: false}\n", "a replica needs 2 GPUs but a node has 1"),
        ("deploy: {gpus_per_node: 4}\n", None),
        ("deploy: {node_selector: {'bad key!': x}}\n", "not a Kubernetes label key"),
        ("deploy: {storage_size: lots}\n", "deploy.storage_size"),
        ("deploy: {redis_url: 'redis://user:hunter2@h:6379/0'}\n", "without credentials"),
    ],
)
def test_spec_check_rejects_impossible_deploy(tmp_path: Path, extra: str, needle: str | None) -> None:
    proc = _cli("spec", "check", str(_spec(tmp_path, extra)))
    if needle is None:
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr
    assert "hunter2" not in proc.stderr


def test_spanning_nodes_needs_whole_nodes(tmp_path: Path) -> None:
    text = (EXAMPLES / "llama3.1-70b-fp8-tp2-draft-h100.yaml").read_text().replace("count: 2}", "count: 12}")
    spec = tmp_path / "s.yaml"
    spec.write_text(text)
    proc = _cli("spec", "check", str(spec))
    assert proc.returncode == 2 and "not a multiple of deploy.gpus_per_node 8" in proc.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--namespace", "Bad_NS"], "--namespace 'Bad_NS'"),
        (["--registry", "https://registry.example.com/"], "--registry"),
        (["--registry", "Registry.Example.com"], "--registry"),
    ],
)
def test_bad_deploy_options_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = _cli("deploy", "k8s", str(EXAMPLES / "cpu-demo.yaml"), "-o", str(tmp_path / "out"), *args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr
    assert not (tmp_path / "out").exists()


def test_output_ownership(tmp_path: Path) -> None:
    """Like emit: a new or empty directory, or one deploy wrote; never one holding other files."""
    out = tmp_path / "k8s"
    spec = str(EXAMPLES / "cpu-demo.yaml")
    assert _cli("deploy", "k8s", spec, "-o", str(out)).returncode == 0
    first = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert "tritonforge.lock.json" in first and "base/kustomization.yaml" in first
    assert (
        _cli("deploy", "k8s", spec, "-o", str(out), "--namespace", "other").returncode == 0
    )  # ours: replaced
    assert "namespace: other" in (out / "base" / "kustomization.yaml").read_text()
    hpa = out / "base" / "hpa.yaml"
    hpa.write_text(hpa.read_text() + "# tuned by hand\n")
    proc = _cli("deploy", "k8s", spec, "-o", str(out))
    assert proc.returncode == 2 and "base/hpa.yaml" in proc.stderr and "--force" in proc.stderr
    assert hpa.read_text().endswith("# tuned by hand\n")
    assert _cli("deploy", "k8s", spec, "-o", str(out), "--force").returncode == 0
    assert "# tuned by hand" not in hpa.read_text()
    (out / "notes.txt").write_text("mine")
    proc = _cli("deploy", "k8s", spec, "-o", str(out))
    assert proc.returncode == 2 and "notes.txt" in proc.stderr
    assert (out / "notes.txt").read_text() == "mine"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "deployment.yaml").write_text("kind: Deployment\n")
    proc = _cli("deploy", "k8s", spec, "-o", str(foreign))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in foreign.iterdir()) == ["deployment.yaml"]


# ---------------------------------------------------------------------------------------- goldens


def _normalized(files: dict[str, bytes], spec_hash: str) -> str:
    """Every file but the spec copies, the spec hash replaced (it changes with any spec default)."""
    parts = []
    for path in sorted(files):
        if path.endswith("spec.yaml"):
            continue
        text = files[path].decode().replace(spec_hash, "<SPEC_HASH>").replace(spec_hash[:12], "<HASH12>")
        parts.append(f"=== {path} ===\n{text}")
    return "\n".join(parts)


@pytest.mark.parametrize("example", ["cpu-demo.yaml", "llama3.1-70b-fp8-tp2-draft-h100.yaml"])
def test_golden(example: str) -> None:
    """Set TRITONFORGE_UPDATE_GOLDEN=1 to rewrite after an intended change, and review the diff."""
    plan = plan_k8s(
        load_spec(EXAMPLES / example), K8sOptions(namespace="llm", registry="registry.example.com/ml")
    )
    text = _normalized(render_k8s(plan), plan.spec_hash)
    golden = GOLDEN / f"{example.removesuffix('.yaml')}.txt"
    if os.environ.get("TRITONFORGE_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


# ---------------------------------------------------------------- kustomize structure without kubectl


def _strip_generated(docs: list[dict]) -> list[dict]:
    """kubectl's output with the ConfigMap hash suffixes taken off (the Python rendering keeps plain names)."""
    text = json.dumps(docs, sort_keys=True)
    for d in docs:
        if d["kind"] == "ConfigMap":
            name = d["metadata"]["name"]
            text = text.replace(f'"{name}"', f'"{name.rsplit("-", 1)[0]}"')
    return sorted(json.loads(text), key=lambda d: (d["kind"], d["metadata"]["name"]))


@needs_kubectl
@pytest.mark.parametrize("example", ["cpu-demo.yaml", "cascade-h100.yaml"])
def test_python_kustomize_matches_kubectl(tmp_path: Path, example: str) -> None:
    """The structure check that runs where kubectl is absent renders what kubectl renders."""
    plan = plan_k8s(load_spec(EXAMPLES / example), K8sOptions(namespace="llm"))
    files = render_k8s(plan)
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    for folder in (f"overlays/{plan.overlay}", "loadtest"):
        ours, problems = k8s_validate.render_kustomization(files, folder)
        assert problems == []
        assert sorted(ours, key=lambda d: (d["kind"], d["metadata"]["name"])) == _strip_generated(
            _kustomize(tmp_path / folder)
        )


def test_kustomization_problems_found_without_kubectl() -> None:
    plan = plan_k8s(load_spec(EXAMPLES / "cpu-demo.yaml"), K8sOptions())
    files = render_k8s(plan)
    overlay = f"overlays/{plan.overlay}"
    assert k8s_validate.render_kustomization(files, overlay)[1] == []
    broken = dict(files)
    broken[f"{overlay}/server-patch.yaml"] = (
        b"- {op: add, path: /spec/nope/containers/0/resources, value: {}}\n"
    )
    assert any("does not apply" in p for p in k8s_validate.render_kustomization(broken, overlay)[1])
    broken = dict(files)
    del broken["base/pdb.yaml"]
    assert any("pdb.yaml does not exist" in p for p in k8s_validate.render_kustomization(broken, overlay)[1])
    broken = dict(files)
    broken["base/kustomization.yaml"] = files["base/kustomization.yaml"].replace(b"spec.yaml", b"spec.yml")
    assert any("spec.yml does not exist" in p for p in k8s_validate.render_kustomization(broken, overlay)[1])


def _invocations(script: str) -> list[list[str]]:
    """Every `tritonforge ...` command line of a Job's shell script, shell variables given values."""
    out = []
    for line in script.splitlines():
        line = line.replace('"$D', '"/store/x').replace('"$OUT"', "/reports/run")
        if line.startswith("tritonforge "):
            out.append(shlex.split(line)[1:])
    return out


@pytest.mark.parametrize("example", ["cpu-demo.yaml", "llama3.1-70b-fp8-tp2-draft-h100.yaml"])
def test_job_commands_parse_with_the_real_cli(example: str) -> None:
    """The build and load-test Jobs' tritonforge command lines are accepted by this tritonforge's CLI."""
    import click

    from tritonforge.cli import cli

    plan = plan_k8s(load_spec(EXAMPLES / example), K8sOptions())
    commands = (
        _invocations(plan.build_script)
        + _invocations(plan.loadtest["script"])
        + _invocations(plan.loadtest["worker_script"])
    )
    assert [c[:2] for c in commands] == [
        ["build", "/spec/spec.yaml"],
        ["emit", "/spec/spec.yaml"],
        ["loadtest", "workload"],
        ["loadtest", "locust"],
        ["loadtest", "locust"],
    ]
    for argv in commands:
        ctx = cli.make_context("tritonforge", list(argv), resilient_parsing=False)
        with ctx:
            sub = cli.get_command(ctx, argv[0])
            assert sub is not None
            if isinstance(sub, click.Group):  # loadtest: a group whose default command is `run`
                name = argv[1] if argv[1] in sub.commands else "run"
                sub = sub.get_command(ctx, name)
                argv = argv[1:] if name != "run" else argv
            assert sub is not None
            sub.make_context(argv[0], list(argv[1:]), parent=ctx)
