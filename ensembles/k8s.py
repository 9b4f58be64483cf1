"""`tritonforge deploy k8s`: the same spec as a Kustomize base + overlay for a Kubernetes cluster.

Pure decisions here (`plan_k8s` -> `K8sPlan`); the YAML layout lives in model_repo_templates/k8s/*.yaml.j2.

One replica is one Triton server over the whole repository (every tier plus the `llm` entry, which calls
local tiers in-process), so a replica holds every GPU tier's `gpu.count` GPUs. Its container runs exactly the
launch `serve --docker` runs (`ensembles.server.repository_launch`), over the repository a build Job made once
on a shared volume under the spec's hash. Layout of DIR:

    base/             server Deployment (or LeaderWorkerSet), Service, build Job, model store PVC, Redis,
                      ServiceMonitor, HPA, PDB, NetworkPolicies, the in-cluster spec
    overlays/<kind>/  cpu-demo (CPU/memory requests and limits) or gpu (nvidia.com/gpu, node placement)
    loadtest/         Locust: a master Job + N worker pods behind a headless Service (or one
                      `tritonforge loadtest` pod when deploy.loadtest_workers is 0), report volume
    image/            Dockerfile + requirements.txt of the serving and tools images
    prometheus-adapter-rules.yaml   the custom-metric rule the HPA reads (merge into prometheus-adapter)
"""

from __future__ import annotations

import json
import re
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

import tritonforge
from tritonforge.builder.spec import DeploymentSpec, Runtime, replica_gpus
from tritonforge.ensembles.dockerfile import DEFAULT_BASE_IMAGE, REQUIREMENTS_HEADER, render_dockerfile
from tritonforge.errors import UserError

TEMPLATES = "k8s"
STORE = "/store"  # the model store PVC's mount path, the same in the build Job and the replicas
SHORT_HASH = 12
PART_OF = "tritonforge"
SECRETS_SUFFIX = "-secrets"
CLIENT_LABEL = "tritonforge.io/client-of"  # pods with this label (= the app) may call the entry Service
PROMETHEUS_NAMESPACE = "monitoring"  # where Prometheus runs (kube-prometheus-stack's default)
REDIS_IMAGE = "redis:7.4.2"
REDIS_PORT = 6379
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
# An image reference's registry host[:port] and path components (https://github.com/distribution/reference).
REGISTRY = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"

# Startup probe budgets (the server is restarted when it is not READY by then; a restart loop is worse than
# waiting, so they are generous). CPU: the demo repository is all-READY in 12.8 s median (12.3-16.1 s) on a
# 2-core machine (README, benchmarks/bench_emit.py) and took 53.9 s with other jobs competing for the cores
# (benchmarks/bench_k8s_resources.py); 300 s. GPU: a replica first reads its engines from the network volume
# (a 70B FP8 TP2 engine is ~70 GB: ~6 min at 200 MB/s), then starts the executor and the Python models;
# 20 minutes before the first restart.
STARTUP_BUDGET_S = {"cpu": 300, "gpu": 1200}
PROBE_PERIOD_S = {"cpu": 5, "gpu": 10}
# Host resources. CPU replicas: one core for Triton and tokenization plus the engine's torch threads; memory
# per Python-backend stub (benchmarks/bench_k8s_resources.py: the demo's server and 4 stubs are 766 MiB
# resident here; 400 MiB a stub leaves room for the NGC image's CUDA build of torch) plus /dev/shm, which
# is memory-backed and charged to the pod. GPU replicas: CPU requests only (no throttling), host memory per
# GPU for the engine load (engines are read into host memory first) and the stubs.
CPU_STUB_MIB = 400
CPU_SERVER_MIB = 512
GPU_CPU_PER_GPU = 4
GPU_MEMORY_GIB_PER_GPU = 32
STORE_SIZE = {
    "cpu": "10Gi",
    "gpu": "500Gi",
}  # engines + checkpoints of every tier (override deploy.storage_size)
REPORTS_SIZE = "1Gi"


@dataclass(frozen=True)
class K8sOptions:
    namespace: str | None = None
    registry: str | None = None


@dataclass
class K8sPlan:
    """Everything decided for one deployment; the templates only lay it out."""

    app: str
    namespace: str
    kind: str  # "cpu" | "gpu"
    spec_hash: str
    short_hash: str
    image: str
    tools_image: str
    entry_model: str
    service: str
    labels: dict[str, str]
    server_labels: dict[str, str]
    workload: str  # "Deployment" | "LeaderWorkerSet"
    lws_size: int
    gpus_per_pod: int
    argv: list[str]  # the leader's (every pod's of a Deployment) command
    worker_argv: list[str]
    mpi: dict[str, Any] | None  # LeaderWorkerSet: the leader's service account and the pods it may exec into
    env: list[dict[str, Any]]
    shm: str
    probes: dict[str, Any]
    resources: dict[str, Any]
    build_resources: dict[str, Any]
    redis: dict[str, Any] | None
    hpa: dict[str, Any] | None
    replicas: int | None
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    storage_class: str | None
    storage_size: str
    checkpoints_claim: str | None
    checkpoints_path: str
    build_script: str
    wait_script: str
    loadtest: dict[str, Any]
    requirements_txt: str
    spec_yaml: str
    adapter_rules: dict[str, Any] = field(default_factory=dict)
    pods: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # leader (every pod of a Deployment), worker
    patches: list[dict[str, Any]] = field(default_factory=list)  # the overlay's JSON patches

    @property
    def repo_path(self) -> str:
        return f"{STORE}/{self.spec_hash}/repo"

    @property
    def overlay(self) -> str:
        return "gpu" if self.kind == "gpu" else "cpu-demo"

    @property
    def workload_api(self) -> str:
        return "apps/v1" if self.workload == "Deployment" else "leaderworkerset.x-k8s.io/v1"

    @property
    def service_selector(self) -> dict[str, str]:
        if self.workload == "Deployment":
            return self.server_labels
        return {**self.server_labels, "role": "leader"}  # the leader runs Triton's endpoints

    @property
    def redis_labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": self.app, "app.kubernetes.io/component": "cache"}

    @property
    def base_resources(self) -> list[str]:
        names = [
            "namespace.yaml",
            "store-pvc.yaml",
            "build-job.yaml",
            "server.yaml",
            "service.yaml",
            "networkpolicy.yaml",
            "servicemonitor.yaml",
            "pdb.yaml",
        ]
        names += ["rbac.yaml"] if self.mpi else []
        return names + (["hpa.yaml"] if self.hpa else []) + (["redis.yaml"] if self.redis else [])


def k8s_name(name: str, limit: int = 40) -> str:
    """A DNS-1123 label from a spec or model name (lowercase, `_`/`.` -> `-`)."""
    out = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:limit].rstrip("-")
    if not out or not K8S_NAME.match(out):
        raise UserError(f"{name!r} gives no valid Kubernetes name; use letters and digits in the spec name")
    return out


def check_options(opts: K8sOptions) -> None:
    if opts.namespace is not None and (len(opts.namespace) > 63 or not K8S_NAME.match(opts.namespace)):
        raise UserError(
            f"--namespace {opts.namespace!r} is not a Kubernetes namespace name (lowercase letters, "
            f"digits and '-', at most 63); e.g. --namespace llm-serving"
        )
    if opts.registry is not None and not REGISTRY.match(opts.registry):
        raise UserError(
            f"--registry {opts.registry!r} is not an image registry prefix; give host[:port][/path] "
            f"in lowercase, without a scheme or trailing slash, e.g. --registry registry.example.com/ml"
        )


# ----------------------------------------------------------------------------------------- the launch


def _placeholder_paths(spec: DeploymentSpec) -> dict:
    """Tier paths without I/O: only the TensorRT-LLM models' configs matter for the launch."""
    from tritonforge.ensembles.wiring import TierPaths

    out = {}
    for t in spec.tiers:
        if t.runtime == Runtime.cpu_reference:
            out[t.name] = TierPaths(
                f"{STORE}/model/{t.name}",
                f"{STORE}/model/{t.name}",
                f"{STORE}/model/{t.name}-draft" if t.draft else None,
            )
        elif t.runtime == Runtime.trtllm_pytorch:  # the unified HF checkpoint the LLM API loads, no engine
            out[t.name] = TierPaths(
                f"/checkpoints/{t.name}/checkpoint",
                t.tokenizer or t.model,
                f"/checkpoints/{t.name}/draft_checkpoint" if t.draft else None,
            )
        else:
            out[t.name] = TierPaths(
                f"/engines/{t.name}/engine",
                t.tokenizer or t.model,
                f"/engines/{t.name}/draft_engine" if t.draft else None,
            )
    return out


def repository_plan(spec: DeploymentSpec):  # -> RepositoryPlan
    from tritonforge.ensembles.wiring import plan_repository

    return plan_repository(spec, _placeholder_paths(spec), tritonforge.__version__)


def replica_launch(spec: DeploymentSpec, image: str, rplan=None):  # -> launch.Launch
    """The server launch of one replica: `launch.repository_launch` (what `serve --docker` runs) over the
    model configs this spec renders."""
    from tritonforge.ensembles.render import _environment, _render  # the same templates emit renders
    from tritonforge.ensembles.server import repository_launch

    plan = rplan or repository_plan(spec)
    env = _environment()
    with tempfile.TemporaryDirectory(prefix="tritonforge-k8s-") as tmp:
        for model in plan.models:
            d = Path(tmp) / model.name
            d.mkdir()
            (d / "config.pbtxt").write_text(_render(env, model.config_template, model.values, model.name))
        return repository_launch(Path(tmp), image)


def requirements_of(spec: DeploymentSpec, rplan=None) -> list[str]:
    """What the repository's Python models import (the lines of its requirements.txt)."""
    return sorted({r for m in (rplan or repository_plan(spec)).models for r in m.requirements})


# ------------------------------------------------------------------------------------------ decisions


def _quantity_gi(size: str) -> str:
    """Docker's `--shm-size` (2g, 512m, 1024k, bytes) as a Kubernetes quantity."""
    m = re.fullmatch(r"(\d+)([bkmg]?)", size.strip().lower())
    if not m:
        raise UserError(f"triton.shm_size {size!r} is not a size like 2g or 512m; fix the spec")
    n, unit = int(m.group(1)), m.group(2)
    return {"g": f"{n}Gi", "m": f"{n}Mi", "k": f"{n}Ki", "b": str(n), "": str(n)}[unit]


def _mib(quantity: str) -> int:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", quantity)
    assert m, quantity
    n, unit = int(m.group(1)), m.group(2)
    return {"Ki": n // 1024, "Mi": n, "Gi": n * 1024, None: n // (1 << 20)}[unit]


def _capacity(spec: DeploymentSpec) -> int:
    """Requests one replica batches at once: every local tier's max_batch_size x engine instances."""
    return sum(t.limits.max_batch_size * t.serving.instance_count for t in spec.tiers)


def autoscale_target(spec: DeploymentSpec) -> float:
    a = spec.deploy.autoscale
    if a.target is not None:
        return a.target
    if a.metric == "inflight_requests":
        return max(1.0, round(0.8 * _capacity(spec)))  # scale out before every batch slot is taken
    return 1.0  # queue_time / pending_requests: requests waiting in Triton's queue per replica


def _milli(value: float) -> str:
    """A Kubernetes quantity for a float: whole numbers as is, else in milli-units."""
    return str(int(value)) if float(value).is_integer() else f"{round(value * 1000)}m"


def adapter_rule(app: str, entry: str, metric: str) -> tuple[str, dict[str, Any]]:
    """The custom metric (per pod) and its prometheus-adapter rule.

    Triton's metrics: https://github.com/triton-inference-server/server docs/user_guide/metrics.md
    (nv_inference_request_duration_us and nv_inference_queue_duration_us are cumulative microseconds, so
    their per-second rate / 1e6 is the mean number of requests in flight / waiting; Little's law);
    the rule format: https://github.com/kubernetes-sigs/prometheus-adapter docs/config.md.
    """
    series = {
        "inflight_requests": "nv_inference_request_duration_us",
        "queue_time": "nv_inference_queue_duration_us",
        "pending_requests": "nv_inference_pending_request_count",
    }[metric]
    name = f"tritonforge_{app.replace('-', '_')}_{metric}"
    matchers = f'<<.LabelMatchers>>,model="{entry}"'
    if metric == "pending_requests":
        query = f"sum(<<.Series>>{{{matchers}}}) by (<<.GroupBy>>)"
    else:
        query = f"sum(rate(<<.Series>>{{{matchers}}}[1m])) by (<<.GroupBy>>) / 1000000"
    rule = {
        "seriesQuery": f'{series}{{namespace!="",pod!="",model="{entry}"}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": f"^{series}$", "as": name},
        "metricsQuery": query,
    }
    return name, rule


def _secret_env(spec: DeploymentSpec, app: str) -> list[dict[str, Any]]:
    """Keys for remote tiers and the cache's HMAC key: from a Secret by reference, never inline."""
    names = [r.api_key_env for r in spec.router.remote if r.api_key_env]
    hmac_env = getattr(spec.cache, "hmac_key_env", None)
    if spec.cache.enabled and hmac_env:
        names.append(hmac_env)
    return [
        {"name": n, "valueFrom": {"secretKeyRef": {"name": app + SECRETS_SUFFIX, "key": n}}}
        for n in sorted(set(names))
    ]


def _tokenizer_arg(spec: DeploymentSpec, spec_hash: str) -> str:
    t = spec.tiers[0]
    if t.runtime == Runtime.trtllm_engine:
        return f"{STORE}/{spec_hash}/build/{t.name}/tokenizer"  # copied there by `tritonforge build`
    ref = t.tokenizer or t.model
    return ref.split(":", 1)[1] if ref.startswith("builtin:") else ref


def in_cluster_spec(spec: DeploymentSpec, app: str) -> DeploymentSpec:
    """The spec the build Job builds: the cache's Redis is the in-cluster one (or deploy.redis_url)."""
    if not (spec.cache.enabled and spec.cache.backend == "redis"):
        return spec
    url = spec.deploy.redis_url or f"redis://{app}-redis:{REDIS_PORT}/0"
    data = spec.model_dump(mode="json")
    data["cache"]["redis_url"] = url
    return DeploymentSpec.model_validate(data)


# ------------------------------------------------------------------------------------ multi-node replicas
#
# A replica spanning nodes is one LeaderWorkerSet group of `size` pods (one per node). TensorRT-LLM's C++
# backend in leader mode runs one tritonserver per rank under one `mpirun` (the rank layout of
# `launch.launch_command`); across pods, the leader's mpirun starts the workers' ranks with `kubectl exec`
# as Open MPI's remote-shell agent, while the workers only wait. That is the LeaderWorkerSet TensorRT-LLM
# example's design (https://github.com/kubernetes-sigs/lws docs/examples/tensorrt-llm/build/server.py:
# `mpirun -mca plm_rsh_agent kubessh --host <pod>:<gpus per node>,...`, workers pause until SIGTERM;
# docs/examples/tensorrt-llm/rbac.yaml: the leader's service account may create pods/exec), itself adapted
# from https://github.com/triton-inference-server/tutorials
# Deployment/Kubernetes/EKS_Multinode_Triton_TRTLLM/multinode_helm_chart/containers/server.py.
# Unlike that example, the hosts come from the LWS environment, not from listing pods (no `list` right).

KUBECTL_VERSION = "v1.31.4"  # the client of the cluster version the manifests target (k8s_validate)
RSH_AGENT = "/tmp/tritonforge-kubexec"  # no "ssh" in its name: Open MPI adds ssh-only flags to such agents
HOSTFILE = "/tmp/tritonforge-hostfile"
WORKER_CONTAINER = "worker"


def lws_pod_names(app: str, groups: int, size: int) -> list[str]:
    """Worker pods of groups 0..groups-1: "leaderWorkerSetName-leaderIndex-workerIndex", workers 1..size-1
    (https://github.com/kubernetes-sigs/lws api/leaderworkerset/v1/leaderworkerset_types.go,
    LeaderWorkerSetSpec; the default Ordinal group identity)."""
    return [f"{app}-{g}-{i}" for g in range(groups) for i in range(1, size)]


def check_multi_node(launch: Any, gpus: int, per_node: int) -> None:
    """Only leader mode spans nodes: one TensorRT-LLM engine whose TP x PP ranks are the replica's GPUs.

    Orchestrator mode (several engines, e.g. a draft model, or several instances) spawns each model's workers
    on its own machine (https://github.com/triton-inference-server/tensorrtllm_backend
    docs/llama_multi_instance.md: instances "on the same machine"), and an LLM API model spawns its own MPI
    workers, so neither can be spread over pods by the leader's mpirun.
    """
    if launch.mode != "leader" or launch.world_size != gpus:
        raise UserError(
            f"deploy: a replica of {gpus} GPUs spans {gpus // per_node} nodes, which needs one TensorRT-LLM "
            f"engine model with tp x pp = {gpus} (leader mode), but this repository launches in "
            f"{launch.mode} mode with world size {launch.world_size}; drop the draft model or extra "
            f"instances, or fit the replica on one node (deploy.gpus_per_node)"
        )


def leader_script(argv: list[str], size: int, slots: int) -> str:
    """The leader's shell command: hostfile from the LWS environment, wait for every worker, then the launch's
    mpirun over all the group's ranks (rank r on host r // slots)."""
    assert argv[:2] == ["mpirun", "--allow-run-as-root"], argv
    mpirun = argv[:2] + [
        "--hostfile",
        HOSTFILE,
        # Fill each host's slots in hostfile order: ranks 0..slots-1 on the leader, the next on worker 1, ...
        # (https://www.open-mpi.org/doc/v4.1/man1/mpirun.1.php, --hostfile "slots=N" and --map-by slot).
        "--map-by",
        "slot",
        "-mca",
        "plm_rsh_agent",
        RSH_AGENT,
        # The leader starts every worker's daemon itself; by default the daemons would start each other
        # (tree spawn), which needs kubectl rights in the workers too (ompi_info: plm_rsh_no_tree_spawn).
        "-mca",
        "plm_rsh_no_tree_spawn",
        "1",
    ]
    return "\n".join(
        [
            "set -eu",
            # LWS_LEADER_ADDRESS = <lws>-<group>.<lws>.<namespace>, LWS_GROUP_SIZE = pods in the group
            # (https://github.com/kubernetes-sigs/lws
            # site/content/en/docs/reference/labels-annotations-and-environment-variables.md).
            f'if [ "$LWS_GROUP_SIZE" != "{size}" ]; then',
            f'  echo "LWS_GROUP_SIZE is $LWS_GROUP_SIZE, the launch has {size} hosts; re-render" >&2; exit 1',
            "fi",
            'LEADER="${LWS_LEADER_ADDRESS%%.*}"',
            'DOMAIN="${LWS_LEADER_ADDRESS#*.}"',
            # Open MPI calls the agent as `<agent> <host> <command>` (what ssh gets); the host is a worker pod.
            f"cat > {RSH_AGENT} <<'EOF'",
            "#!/bin/sh",
            'pod="${1%%.*}"',
            "shift",
            f'exec kubectl exec -n "$TF_NAMESPACE" -c {WORKER_CONTAINER} "$pod" -- /bin/sh -c "$*"',
            "EOF",
            f"chmod 755 {RSH_AGENT}",
            f'echo "$LWS_LEADER_ADDRESS slots={slots}" > {HOSTFILE}',
            "i=1",
            'while [ "$i" -lt "$LWS_GROUP_SIZE" ]; do',
            '  W="$LEADER-$i"',
            f'  until kubectl exec -n "$TF_NAMESPACE" -c {WORKER_CONTAINER} "$W" -- true >/dev/null 2>&1; do',
            '    echo "waiting for worker pod $W"',
            "    sleep 5",
            "  done",
            f'  echo "$W.$DOMAIN slots={slots}" >> {HOSTFILE}',
            "  i=$((i + 1))",
            "done",
            f"cat {HOSTFILE}",
            "exec " + shlex.join(mpirun + argv[2:]),
        ]
    )


# A worker runs no command of its own: its ranks are started in it by the leader's mpirun. It waits until the
# group is torn down (SIGTERM), like server.py's `worker` mode in the LWS example.
WORKER_SCRIPT = (
    'trap "exit 0" TERM INT; echo "worker: ranks are started here by the leader\'s mpirun"; '
    "while :; do sleep 3600 & wait $!; done"
)


def kubectl_dockerfile(dockerfile: str) -> str:
    """The Dockerfile with kubectl in the serving stage (the leader's MPI agent; the LWS example's image
    installs it too: https://github.com/kubernetes-sigs/lws docs/examples/tensorrt-llm/build/Dockerfile)."""
    marker = "\n# The build and load-test Jobs also run tritonforge itself"
    if marker not in dockerfile:
        raise UserError(
            "the generated Dockerfile has no tools stage; this is a tritonforge bug, please report it"
        )
    head, tail = dockerfile.split(marker, 1)
    lines = [
        "",
        "# Multi-node replicas: the leader starts the workers' MPI ranks with `kubectl exec`. kubectl",
        f"# {KUBECTL_VERSION}, checked against its published SHA-256 "
        "(https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/).",
        "ARG TARGETARCH",
        'RUN python3 -c "import hashlib, sys, urllib.request as r; '
        f"u = 'https://dl.k8s.io/release/{KUBECTL_VERSION}/bin/linux/${{TARGETARCH:-amd64}}/kubectl'; "
        "b = r.urlopen(u).read(); "
        "ok = hashlib.sha256(b).hexdigest() == r.urlopen(u + '.sha256').read().decode().split()[0]; "
        "ok or sys.exit('kubectl: SHA-256 mismatch'); "
        "open('/usr/local/bin/kubectl', 'wb').write(b)\" \\",
        " && chmod 755 /usr/local/bin/kubectl && kubectl version --client",
    ]
    return head + "\n".join(lines) + "\n" + marker + tail


# ----------------------------------------------------------------------------------------- load test
#
# Locust's distributed mode (https://docs.locust.io/en/stable/running-distributed.html, "Distributed load
# generation"): one master (`--master`, runs no users, aggregates the statistics, writes --csv/--html) and
# N workers (`--worker --master-host HOST`, each one process on one core) that connect to the master's port
# 5557 (--master-bind-port's default); `--expect-workers N` makes a headless master wait for N workers
# before it starts. The master reaches its workers through a headless Service. Custom locustfile options
# (model, protocol, workload) are given to the master only: Locust forwards them to the workers when the
# test starts (https://docs.locust.io/en/stable/extending-locust.html, "Custom arguments").

LOCUST_MASTER_PORT = 5557
LOADTEST_DURATION = "60s"


def plan_loadtest(
    app: str, service: str, entry: str, users: int, workers: int, tokenizer: str, shared: str
) -> dict[str, Any]:
    """The load-test pods' commands: `tritonforge loadtest` in one pod (workers 0: the full report.json), or
    a Locust master Job + `workers` worker pods (Locust's own CSV/HTML report, written by the master)."""
    url, grpc = f"http://{service}:{PORTS['http']}", f"{service}:{PORTS['grpc']}"
    out = 'OUT="/reports/run-$(date -u +%Y%m%dT%H%M%SZ)"'
    if workers == 0:
        run = [
            "tritonforge loadtest",
            f"--url {url}",
            f"--model {entry}",
            f"--grpc-url {grpc}",
            f"--metrics-url http://{service}:{PORTS['metrics']}/metrics",
            f"--users {users}",
            f"--duration {LOADTEST_DURATION}",
            f"--tokenizer {tokenizer}",
            "--spec /spec/spec.yaml",
            '-o "$OUT"',
        ]
        script = ["set -eu", out, " ".join(run), 'echo "report: $OUT/report.json"']
        return {
            "workers": 0,
            "script": "\n".join(script),
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        }
    master_service = f"{app}-locust-master"
    master = [
        "tritonforge loadtest locust",
        "--master",
        f"--master-bind-port {LOCUST_MASTER_PORT}",
        f"--expect-workers {workers}",
        "--expect-workers-max-wait 600",  # worker pods may wait for a node; then the master gives up
        "--headless",
        f"--host {url}",
        f"-u {users}",
        f"-r {users}",
        f"-t {LOADTEST_DURATION}",
        "--stop-timeout 300",
        "--only-summary",
        f"--model {entry}",
        f"--grpc-url {grpc}",
        '--workload-file "$W"',
        '--csv "$OUT/locust"',
        '--html "$OUT/locust.html"',
    ]
    # The requests are made once, on the volume every pod mounts: a worker that built them itself would block
    # Locust's event loop at test start longer than the master waits for heartbeats (3 s, locust/runners.py
    # HEARTBEAT_LIVENESS x HEARTBEAT_INTERVAL in https://github.com/locustio/locust) and be dropped.
    make = f'tritonforge loadtest workload --tokenizer {tokenizer} -o "$W"'
    workload_file = f'W="{shared}/$(basename "$OUT")/workload.jsonl"'
    return {
        "workers": workers,
        "users": users,
        "master_service": master_service,
        "port": LOCUST_MASTER_PORT,
        "script": "\n".join(
            [
                "set -eu",
                out,
                workload_file,
                'mkdir -p "$OUT"',
                make,
                " ".join(master),
                'echo "report: $OUT/locust.html"',
            ]
        ),
        "worker_script": "\n".join(
            [
                "set -eu",
                " ".join(
                    [
                        "tritonforge loadtest locust --worker",
                        f"--master-host {master_service}",
                        f"--master-port {LOCUST_MASTER_PORT}",
                    ]
                ),
            ]
        ),
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "worker_resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
    }


def plan_k8s(spec: DeploymentSpec, opts: K8sOptions) -> K8sPlan:
    """Every decision of the deployment (pure but for rendering the model configs to read the launch)."""
    check_options(opts)
    app = k8s_name(spec.name)
    spec = in_cluster_spec(spec, app)
    d = spec.deploy
    spec_hash = spec.spec_hash()
    short = spec_hash[:SHORT_HASH]
    namespace = opts.namespace or app
    gpus = replica_gpus(spec)
    kind = "gpu" if gpus else "cpu"
    if d.image:
        image = d.image
        tools_image = f"{d.image}-tools" if ":" in d.image.rsplit("/", 1)[-1] else f"{d.image}:tools"
    else:
        repo = f"{opts.registry}/tritonforge-{app}" if opts.registry else f"tritonforge-{app}"
        image, tools_image = f"{repo}:{short}", f"{repo}:{short}-tools"
    rplan = repository_plan(spec)
    launch = replica_launch(spec, image, rplan)
    entry = rplan.entry_model
    labels = {
        "app.kubernetes.io/name": app,
        "app.kubernetes.io/part-of": PART_OF,
        "tritonforge.io/spec-hash": short,
    }
    server_labels = {"app.kubernetes.io/name": app, "app.kubernetes.io/component": "server"}
    # A replica spanning nodes takes whole nodes (spec check refuses anything else).
    lws = gpus > d.gpus_per_node
    size = gpus // d.gpus_per_node if lws else 1
    gpus_per_pod = d.gpus_per_node if lws else gpus
    argv = list(launch.argv)
    worker_argv: list[str] = []
    mpi = None
    if lws:
        check_multi_node(launch, gpus, d.gpus_per_node)
        argv = ["sh", "-c", leader_script(argv, size, d.gpus_per_node)]
        worker_argv = ["sh", "-c", WORKER_SCRIPT]
        mpi = {"service_account": f"{app}-mpi", "exec_pods": lws_pod_names(app, d.replicas.max, size)}
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(launch.env.items())]
    env += [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "TRANSFORMERS_OFFLINE", "value": "1"}]
    if lws:  # the leader's kubectl exec names the namespace the group runs in (downward API)
        env.append({"name": "TF_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}})
    env += _secret_env(spec, app)
    shm = _quantity_gi(spec.triton.shm_size)
    budget, period = STARTUP_BUDGET_S[kind], PROBE_PERIOD_S[kind]
    probes = {
        "startupProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": period,
            "failureThreshold": budget // period,
            "timeoutSeconds": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
            "timeoutSeconds": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
            "timeoutSeconds": 5,
        },
    }
    if kind == "gpu":
        resources = {
            "requests": {
                "cpu": str(GPU_CPU_PER_GPU * gpus_per_pod),
                "memory": f"{GPU_MEMORY_GIB_PER_GPU * gpus_per_pod}Gi",
                "nvidia.com/gpu": str(gpus_per_pod),
            },
            "limits": {
                "memory": f"{2 * GPU_MEMORY_GIB_PER_GPU * gpus_per_pod}Gi",
                "nvidia.com/gpu": str(gpus_per_pod),
            },
        }
        build_resources = {
            "requests": {
                "cpu": str(GPU_CPU_PER_GPU * gpus_per_pod),
                "memory": f"{2 * GPU_MEMORY_GIB_PER_GPU * gpus_per_pod}Gi",
                "nvidia.com/gpu": str(gpus_per_pod),
            },
            "limits": {"nvidia.com/gpu": str(gpus_per_pod)},
        }
    else:
        python_models = [m for m in rplan.models if m.values.get("backend") == "python"]
        stubs = sum(int(m.values.get("instance_count", 1)) for m in python_models)
        threads = sum((t.serving.cpu_threads or 1) * t.serving.instance_count for t in spec.tiers)
        memory = CPU_SERVER_MIB + CPU_STUB_MIB * stubs + _mib(shm)
        cpu = 1 + threads
        resources = {
            "requests": {"cpu": str(cpu), "memory": f"{memory}Mi"},
            "limits": {"cpu": str(2 * cpu), "memory": f"{memory}Mi"},
        }
        build_resources = {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}}
    metric_name, rule = adapter_rule(app, entry, d.autoscale.metric)
    hpa = None
    if d.autoscale.enabled and d.replicas.max > d.replicas.min:
        hpa = {
            "metric": metric_name,
            "target": _milli(autoscale_target(spec)),
            "min": d.replicas.min,
            "max": d.replicas.max,
        }
    redis = None
    if spec.cache.enabled and spec.cache.backend == "redis" and not d.redis_url:
        redis = {"name": f"{app}-redis", "image": REDIS_IMAGE, "port": REDIS_PORT, "memory": "2Gi"}
    d_store = f"{STORE}/{spec_hash}"
    build_script = "\n".join(
        [
            "set -eu",
            f'D="{d_store}"',
            'if [ -f "$D/repo/tritonforge.lock.json" ]; then echo "already built: $D"; exit 0; fi',
            'tritonforge build /spec/spec.yaml -o "$D/build"',
            'tritonforge emit /spec/spec.yaml -o "$D/repo" --build-dir "$D/build"',
        ]
    )
    wait_script = (
        f'until [ -f "{d_store}/repo/tritonforge.lock.json" ]; do echo "waiting for the build Job '
        f'{app}-build-{short}"; sleep 10; done'
    )
    users = max(1, min(64, _capacity(spec)))
    service = f"{app}-{k8s_name(entry, 20)}"
    loadtest = plan_loadtest(
        app, service, entry, users, d.loadtest_workers, _tokenizer_arg(spec, spec_hash), f"{d_store}/loadtest"
    )
    requirements = requirements_of(spec, rplan)
    data = spec.model_dump(mode="json")
    plan = K8sPlan(
        app=app,
        namespace=namespace,
        kind=kind,
        spec_hash=spec_hash,
        short_hash=short,
        image=image,
        tools_image=tools_image,
        entry_model=entry,
        service=service,
        labels=labels,
        server_labels=server_labels,
        workload="LeaderWorkerSet" if lws else "Deployment",
        lws_size=size,
        gpus_per_pod=gpus_per_pod,
        argv=argv,
        worker_argv=worker_argv,
        mpi=mpi,
        env=env,
        shm=shm,
        probes=probes,
        resources=resources,
        build_resources=build_resources,
        redis=redis,
        hpa=hpa,
        replicas=None if hpa else d.replicas.min,
        node_selector=dict(sorted(d.node_selector.items())),
        tolerations=[t.model_dump(mode="json", exclude_none=True) for t in d.tolerations],
        storage_class=d.storage_class,
        storage_size=d.storage_size or STORE_SIZE[kind],
        checkpoints_claim=d.checkpoints_claim,
        checkpoints_path=d.checkpoints_path,
        build_script=build_script,
        wait_script=wait_script,
        loadtest=loadtest,
        requirements_txt=REQUIREMENTS_HEADER + "".join(f"{r}\n" for r in requirements),
        spec_yaml="# The spec the build Job builds (generated by tritonforge deploy k8s).\n"
        + yaml.safe_dump(data, sort_keys=True),
        adapter_rules={"rules": [rule]},
    )
    plan.pods = {"leader": server_pod(plan, worker=False)}
    if lws:
        plan.pods["worker"] = server_pod(plan, worker=True)
    plan.patches = overlay_patches(plan)
    return plan


def server_pod(plan: K8sPlan, worker: bool) -> dict[str, Any]:
    """The server pod: waits for the build, then runs the launch over the repository on the store volume."""
    container: dict[str, Any] = {
        "name": "triton" if not worker else WORKER_CONTAINER,
        "image": plan.image,
        "command": plan.worker_argv if worker else plan.argv,
        "env": plan.env,
    }
    if not worker:
        container["ports"] = [
            {"name": n, "containerPort": port, "protocol": "TCP"} for n, port in PORTS.items()
        ]
        container.update(plan.probes)
    container["volumeMounts"] = [
        {"name": "store", "mountPath": STORE, "readOnly": True},
        # The launch serves /models (as `serve --docker` mounts it): the repository the build Job emitted.
        {"name": "store", "mountPath": "/models", "subPath": f"{plan.spec_hash}/repo", "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    pod: dict[str, Any] = {}
    if plan.mpi and not worker:
        pod["serviceAccountName"] = plan.mpi["service_account"]  # may exec into its group's workers only
    elif plan.mpi:
        pod["automountServiceAccountToken"] = False  # workers call no API
    return pod | {
        "initContainers": [
            {
                "name": "wait-for-build",
                "image": plan.image,
                "command": ["sh", "-c", plan.wait_script],
                "volumeMounts": [{"name": "store", "mountPath": STORE, "readOnly": True}],
            }
        ],
        "containers": [container],
        # Triton's default --exit-timeout-secs is 30: in-flight requests finish before the pod is killed.
        "terminationGracePeriodSeconds": 60,
        "volumes": [
            {"name": "store", "persistentVolumeClaim": {"claimName": f"{plan.app}-store", "readOnly": True}},
            # The Python backend's shared memory and the engines' MPI/NCCL buffers: docker's --shm-size.
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": plan.shm}},
        ],
    }


def _placement_ops(pod_path: str, plan: K8sPlan) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    if plan.node_selector:
        ops.append({"op": "add", "path": f"{pod_path}/nodeSelector", "value": plan.node_selector})
    if plan.tolerations:
        ops.append({"op": "add", "path": f"{pod_path}/tolerations", "value": plan.tolerations})
    return ops


def overlay_patches(plan: K8sPlan) -> list[dict[str, Any]]:
    """JSON patches (RFC 6902; they apply to CRDs too) of the overlay: resources and node placement."""
    if plan.workload == "Deployment":
        pod_paths = ["/spec/template/spec"]
    else:
        pod_paths = [f"/spec/leaderWorkerTemplate/{t}/spec" for t in ("leaderTemplate", "workerTemplate")]
    server_ops = []
    for path in pod_paths:
        server_ops.append({"op": "add", "path": f"{path}/containers/0/resources", "value": plan.resources})
        server_ops += _placement_ops(path, plan)
    build_ops = [
        {"op": "add", "path": "/spec/template/spec/containers/0/resources", "value": plan.build_resources}
    ]
    build_ops += _placement_ops("/spec/template/spec", plan)
    what = (
        "nvidia.com/gpu = the replica's GPUs per pod, host CPU/memory, node placement"
        if plan.kind == "gpu"
        else "CPU/memory requests and limits (memory includes the memory-backed /dev/shm)"
    )
    return [
        {
            "file": "server-patch.yaml",
            "why": f"server: {what}",
            "target": {
                "group": plan.workload_api.split("/")[0],
                "version": "v1",
                "kind": plan.workload,
                "name": plan.app,
            },
            "ops": server_ops,
        },
        {
            "file": "build-patch.yaml",
            "why": "build Job: resources (GPU builds quantize and build on the GPUs), placement",
            "target": {
                "group": "batch",
                "version": "v1",
                "kind": "Job",
                "name": f"{plan.app}-build-{plan.short_hash}",
            },
            "ops": build_ops,
        },
    ] + (
        []
        if plan.kind == "gpu"
        else [
            # Single-node demo clusters (kind, minikube, k3d) provision ReadWriteOnce volumes only; pods on one node
            # share such a volume. Replicas spread over GPU nodes need ReadWriteMany (NFS, EFS, Filestore, Lustre).
            {
                "file": "store-patch.yaml",
                "why": "model store: ReadWriteOnce, what single-node demo clusters provision",
                "target": {"version": "v1", "kind": "PersistentVolumeClaim", "name": f"{plan.app}-store"},
                "ops": [{"op": "replace", "path": "/spec/accessModes", "value": ["ReadWriteOnce"]}],
            },
        ]
    )


# --------------------------------------------------------------------------------------------- render


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the Jobs' shell scripts) as literal blocks, readable as written."""


_Dumper.add_representer(
    str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None)
)


def _toyaml(value: Any, indent: int = 0) -> str:
    """Block YAML of `value`, every line after the first indented by `indent` (for `key:{{ v|toyaml(n) }}`)."""
    text = yaml.dump(value, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000).rstrip(
        "\n"
    )
    if isinstance(value, (dict, list)) and value:
        pad = " " * indent
        return "\n" + "\n".join(pad + line for line in text.splitlines())
    return " " + text.removesuffix("\n...")


def _environment() -> jinja2.Environment:
    from tritonforge.ensembles.render import TEMPLATES_DIR

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR / TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["toyaml"] = _toyaml
    env.filters["component"] = lambda labels, c: {**labels, "app.kubernetes.io/component": c}
    env.filters["merge"] = lambda a, b: {**a, **b}
    return env


def render_k8s(plan: K8sPlan) -> dict[str, bytes]:
    """Every file of DIR (relative path -> bytes); deterministic."""
    env = _environment()
    p = {
        "p": plan,
        "ports": PORTS,
        "store": STORE,
        "client_label": CLIENT_LABEL,
        "prometheus_namespace": PROMETHEUS_NAMESPACE,
        "reports_size": REPORTS_SIZE,
        "lws_name_label": LWS_NAME_LABEL,
    }

    def r(template: str) -> bytes:
        try:
            return env.get_template(template).render(**p).encode()
        except jinja2.UndefinedError as exc:
            raise UserError(
                f"k8s template {template} needs a value that was not given ({exc}); "
                f"this is a tritonforge bug, please report it"
            ) from None

    files: dict[str, bytes] = {f"base/{name}": r(f"{name}.j2") for name in plan.base_resources}
    files["base/kustomization.yaml"] = r("base-kustomization.yaml.j2")
    files["base/spec.yaml"] = plan.spec_yaml.encode()
    files[f"overlays/{plan.overlay}/kustomization.yaml"] = r("overlay-kustomization.yaml.j2")
    for patch in plan.patches:
        p["patch"] = patch
        files[f"overlays/{plan.overlay}/{patch['file']}"] = r("overlay-patch.yaml.j2")
    files["loadtest/kustomization.yaml"] = r("loadtest-kustomization.yaml.j2")
    files["loadtest/loadtest-job.yaml"] = r("loadtest-job.yaml.j2")
    files["loadtest/spec.yaml"] = plan.spec_yaml.encode()
    files["image/requirements.txt"] = plan.requirements_txt.encode()
    dockerfile = render_dockerfile(plan.requirements_txt, DEFAULT_BASE_IMAGE)
    files["image/Dockerfile"] = (kubectl_dockerfile(dockerfile) if plan.mpi else dockerfile).encode()
    files["prometheus-adapter-rules.yaml"] = (
        "# prometheus-adapter rule for the HPA's custom metric: merge into the adapter's config (rules:).\n"
        + yaml.safe_dump(plan.adapter_rules, sort_keys=False, width=1000)
    ).encode()
    for path, data in files.items():
        if path.endswith(".yaml") and path != "base/spec.yaml":
            for marker in ("{{", "{%"):
                if marker in data.decode():
                    raise UserError(
                        f"{path}: unfilled template marker; this is a tritonforge bug, please report it"
                    )
    return files


def lock_file(spec: DeploymentSpec, plan: K8sPlan, files: dict[str, bytes]) -> bytes:
    """The ownership record `emit` uses too (tritonforge.lock.json): a later run may replace only this."""
    import hashlib

    lock = {
        "tritonforge_version": tritonforge.__version__,
        "kind": "k8s",
        "spec_name": spec.name,
        "spec_hash": plan.spec_hash,
        "files": {p: hashlib.sha256(d).hexdigest() for p, d in sorted(files.items())},
    }
    return (json.dumps(lock, indent=2, sort_keys=True) + "\n").encode()


def objects(files: dict[str, bytes], folder: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(file, object) for every Kubernetes object of the rendered YAML files (kustomizations and the overlays'
    JSON patches excluded)."""
    out = []
    for path, data in sorted(files.items()):
        if not path.endswith(".yaml") or path.endswith(("kustomization.yaml", "spec.yaml")):
            continue
        if (
            path == "prometheus-adapter-rules.yaml"
            or path.startswith("overlays/")
            or (folder and not path.startswith(folder + "/"))
        ):
            continue
        for doc in yaml.safe_load_all(data):
            if doc:
                out.append((path, doc))
    return out


def check_rendered(files: dict[str, bytes], plan: K8sPlan) -> list[str]:
    """Problems of DIR: each kustomization (overlay and load test) rendered as kustomize would, and every
    object it yields checked against the schemas."""
    from tritonforge.ensembles import k8s_validate

    problems = []
    for folder in (f"overlays/{plan.overlay}", "loadtest"):
        objs, found = k8s_validate.render_kustomization(files, folder)
        problems += found + k8s_validate.validate_objects([(folder, o) for o in objs])
    return problems


def deploy_k8s(
    spec_path: Path, out: Path, opts: K8sOptions, validate: bool = True, force: bool = False
) -> dict[str, Any]:
    """Render, check against the schemas, and publish DIR (emit's rules: only a directory tritonforge wrote
    is replaced, atomically). Returns a summary."""
    from tritonforge.builder.spec import load_spec
    from tritonforge.ensembles.render import LOCK_FILE, write_repository

    spec = load_spec(spec_path)
    plan = plan_k8s(spec, opts)
    files = render_k8s(plan)
    checked = False
    if validate:
        from tritonforge.ensembles import k8s_validate

        if k8s_validate.available():
            problems = check_rendered(files, plan)
            if problems:
                raise UserError(
                    f"a rendered object does not match the Kubernetes {k8s_validate.K8S_VERSION} schema: "
                    f"{problems[0]}; if the spec is right this is a tritonforge bug, please report it"
                )
            checked = True
    files[LOCK_FILE] = lock_file(spec, plan, files)
    try:
        write_repository(files, out, force=force, spec_path=spec_path, validate=False)
    except OSError as exc:
        raise UserError(
            f"cannot write {out}: {exc.strerror or exc} ({exc.filename}); check the path and its permissions"
        ) from None
    return {
        "directory": str(out.expanduser().resolve()),
        "namespace": plan.namespace,
        "overlay": f"overlays/{plan.overlay}",
        "workload": plan.workload,
        "gpus_per_pod": plan.gpus_per_pod,
        "pods_per_replica": plan.lws_size,
        "image": plan.image,
        "tools_image": plan.tools_image,
        "service": plan.service,
        "spec_hash": plan.spec_hash,
        "hpa_metric": plan.hpa["metric"] if plan.hpa else None,
        "schema_checked": checked,
        "files": len(files),
    }
