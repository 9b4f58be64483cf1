"""`deploy k8s` for a replica spanning nodes: the LeaderWorkerSet's leader and worker launch.

The leader's shell command runs here for real (sh), with two stand-ins for what cannot run here: `kubectl`
(no cluster; it answers `kubectl exec POD -- CMD` as the API server would once the pod runs, see
https://kubernetes.io/docs/reference/kubectl/generated/kubectl_exec/) and `mpirun` (no Open MPI here; it
records its argv and hostfile, https://www.open-mpi.org/doc/v4.1/man1/mpirun.1.php).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tritonforge.builder.spec import load_spec
from tritonforge.ensembles import k8s, k8s_validate
from tritonforge.ensembles.k8s import K8sOptions, objects, plan_k8s, render_k8s, replica_launch

from .conftest import EXAMPLES

needs_validate = pytest.mark.skipif(not k8s_validate.available(), reason="kubernetes-validate not installed")


def _spanning_spec(tmp_path: Path, tp: int = 8, pp: int = 2, extra: str = "") -> Path:
    """Llama 3.1 on 16 GPUs (TP x PP = 16, one engine: leader mode) with 8-GPU nodes: two pods a replica."""
    data = yaml.safe_load((EXAMPLES / "llama3.1-8b-fp8-h100.yaml").read_text())
    data["name"] = "llama-tp16"
    data["tiers"][0]["gpu"]["count"] = tp * pp
    data["tiers"][0]["parallelism"] = {"tp": tp, "pp": pp}
    p = tmp_path / "spanning.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False) + extra)
    return p


def _lws(files: dict[str, bytes]) -> dict:
    (lws,) = [o for _, o in objects(files) if o["kind"] == "LeaderWorkerSet"]
    return lws


def _stubs(bin_dir: Path, log: Path, ready_after: int) -> None:
    """`kubectl` that fails `exec` until a worker was asked `ready_after` times, and `mpirun` that records."""
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "kubectl $*" >> "{log}"\n'
        'n=$(grep -c "^kubectl exec" "' + str(log) + '")\n'
        f'[ "$n" -gt {ready_after} ] || exit 1\n'
        'if [ "$(eval echo \\${$#})" != true ]; then eval "last=\\${$#}"; sh -c "$last"; fi\n'
    )
    (bin_dir / "mpirun").write_text(
        "#!/bin/sh\n"
        f'for a in "$@"; do printf "%s\\n" "$a"; done > "{log}.mpirun"\n'
        'while [ "$1" != --hostfile ]; do shift; done\n'
        f'cp "$2" "{log}.hostfile"\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)


def _run_leader(plan: k8s.K8sPlan, tmp_path: Path, group_size: str, ready_after: int = 2):
    container = _lws_leader_container(plan)
    assert container["command"][:2] == ["sh", "-c"]
    script = container["command"][2]
    agent, hostfile = tmp_path / "kubexec", tmp_path / "hostfile"
    script = script.replace(k8s.RSH_AGENT, str(agent)).replace(k8s.HOSTFILE, str(hostfile))
    log = tmp_path / "calls.log"
    _stubs(tmp_path / "bin", log, ready_after)
    env = {
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "LWS_LEADER_ADDRESS": f"{plan.app}-3.{plan.app}.llm",  # group 3 of the LWS, namespace llm
        "LWS_GROUP_SIZE": group_size,
        "TF_NAMESPACE": "llm",
    }
    proc = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    return proc, log, agent


def _lws_leader_container(plan: k8s.K8sPlan) -> dict:
    return _lws(render_k8s(plan))["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]


@pytest.mark.parametrize("tp,pp", [(8, 2), (16, 1)])
def test_leader_launch_spans_the_group_as_launch_command(tmp_path: Path, tp: int, pp: int) -> None:
    """Hostfile from the LWS env, the leader waits for its workers, and mpirun runs launch_command's ranks
    (one tritonserver per rank, world size = TP x PP) with rank r on host r // gpus_per_node."""
    spec = load_spec(_spanning_spec(tmp_path, tp, pp))
    plan = plan_k8s(spec, K8sOptions(namespace="llm"))
    launch = replica_launch(spec, plan.image)
    assert (launch.mode, launch.world_size, plan.lws_size, plan.gpus_per_pod) == ("leader", 16, 2, 8)
    proc, log, agent = _run_leader(plan, tmp_path, "2")
    assert proc.returncode == 0, proc.stderr
    assert "waiting for worker pod llama-tp16-3-1" in proc.stdout  # not ready at first: the leader waited
    hosts = Path(f"{log}.hostfile").read_text().split("\n")[:-1]
    assert hosts == ["llama-tp16-3.llama-tp16.llm slots=8", "llama-tp16-3-1.llama-tp16.llm slots=8"]
    argv = Path(f"{log}.mpirun").read_text().split("\n")[:-1]
    head = argv[: argv.index("-n")]
    assert head == [
        "--allow-run-as-root",
        "--hostfile",
        str(tmp_path / "hostfile"),
        "--map-by",
        "slot",
        "-mca",
        "plm_rsh_agent",
        str(agent),
        "-mca",
        "plm_rsh_no_tree_spawn",
        "1",
    ]
    ranks = argv[len(head) :]
    assert ["mpirun", *head[:1], *ranks] == list(launch.argv)  # launch_command's ranks, argument for argument
    contexts = " ".join(ranks).split(" : ")
    assert len(contexts) == launch.world_size == sum(int(h.split("slots=")[1]) for h in hosts)
    for rank, ctx in enumerate(contexts):
        assert ctx.startswith("-n 1 /opt/tritonserver/bin/tritonserver --model-repository=/models")
        assert ("--load-model=" in ctx) == (rank > 0) and f"prefix{rank}_" in ctx
    # By-slot filling: ranks 0-7 (rank 0 serves HTTP) on the leader, 8-15 on worker 1.
    layout = [hosts[r // plan.gpus_per_pod].split()[0] for r in range(launch.world_size)]
    assert layout[0].startswith("llama-tp16-3.") and layout[-1].startswith("llama-tp16-3-1.")
    # Open MPI starts a remote daemon as `<agent> <host> <command>`: a kubectl exec in that worker pod.
    daemon = subprocess.run(
        [str(agent), "llama-tp16-3-1.llama-tp16.llm", "echo", "orted", "started"],
        env={"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "TF_NAMESPACE": "llm"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert daemon.returncode == 0 and daemon.stdout.strip() == "orted started"
    assert log.read_text().splitlines()[-1] == (
        "kubectl exec -n llm -c worker llama-tp16-3-1 -- /bin/sh -c echo orted started"
    )


def test_leader_refuses_a_group_of_another_size(tmp_path: Path) -> None:
    plan = plan_k8s(load_spec(_spanning_spec(tmp_path)), K8sOptions(namespace="llm"))
    proc, log, _ = _run_leader(plan, tmp_path, "3")
    assert proc.returncode == 1 and "LWS_GROUP_SIZE is 3, the launch has 2 hosts" in proc.stderr
    assert not Path(f"{log}.mpirun").exists()


def test_worker_waits_until_the_group_ends(tmp_path: Path) -> None:
    """A worker runs nothing itself (its ranks come from the leader's mpirun) and ends cleanly on SIGTERM."""
    plan = plan_k8s(load_spec(_spanning_spec(tmp_path)), K8sOptions())
    worker = _lws(render_k8s(plan))["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]
    (container,) = worker["containers"]
    assert container["name"] == k8s.WORKER_CONTAINER and "ports" not in container
    assert not {"readinessProbe", "startupProbe", "livenessProbe"} & set(container)
    proc = subprocess.Popen(container["command"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert "started here by the leader's mpirun" in proc.stdout.readline()
        assert proc.poll() is None  # still waiting
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@needs_validate
def test_group_pods_rbac_and_image(tmp_path: Path) -> None:
    spec = _spanning_spec(tmp_path, extra="deploy: {replicas: {min: 1, max: 3}}\n")
    plan = plan_k8s(load_spec(spec), K8sOptions(namespace="llm"))
    files = render_k8s(plan)
    objs = objects(files)
    assert k8s_validate.validate_objects(objs) == []
    assert _lws(files)["spec"]["startupPolicy"] == "LeaderCreated"  # workers must not wait for a READY leader
    assert _lws(files)["spec"]["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"
    tmpl = _lws(files)["spec"]["leaderWorkerTemplate"]
    leader, worker = tmpl["leaderTemplate"]["spec"], tmpl["workerTemplate"]["spec"]
    # Triton's endpoints and probes on the leader; /dev/shm (memory) and the repository on every pod.
    probe = leader["containers"][0]["readinessProbe"]["httpGet"]
    assert probe == {"path": "/v2/health/ready", "port": "http"}
    for pod in (leader, worker):
        mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["/models"]["subPath"] == f"{plan.spec_hash}/repo"
        shm = next(v for v in pod["volumes"] if v["name"] == mounts["/dev/shm"]["name"])
        assert shm["emptyDir"]["medium"] == "Memory"
        assert [c["name"] for c in pod["initContainers"]] == ["wait-for-build"]
    # Only the leader holds a token; it may exec into exactly this deployment's worker pods.
    assert (
        leader["serviceAccountName"] == "llama-tp16-mpi" and worker["automountServiceAccountToken"] is False
    )
    role = next(o for _, o in objs if o["kind"] == "Role")
    workers = ["llama-tp16-0-1", "llama-tp16-1-1", "llama-tp16-2-1"]  # groups 0..replicas.max-1
    assert {tuple(r["resources"]): (r["verbs"], r["resourceNames"]) for r in role["rules"]} == {
        ("pods",): (["get"], workers),
        ("pods/exec",): (["get", "create"], workers),
    }
    binding = next(o for _, o in objs if o["kind"] == "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "llama-tp16-mpi", "namespace": "llm"}]
    # kubectl in the serving image (the tools stage builds on it); none for a single-node spec.
    dockerfile = files["image/Dockerfile"].decode()
    assert dockerfile.index("/bin/linux/${TARGETARCH:-amd64}/kubectl") < dockerfile.index(
        "FROM serve AS tools"
    )
    assert "sha256" in dockerfile
    single = render_k8s(plan_k8s(load_spec(EXAMPLES / "llama3.1-8b-fp8-h100.yaml"), K8sOptions()))
    assert "kubectl" not in single["image/Dockerfile"].decode() and "base/rbac.yaml" not in single


def test_orchestrator_mode_cannot_span_nodes(tmp_path: Path) -> None:
    """A draft model makes two engines (orchestrator mode, one machine): refused in one line, nothing written."""
    text = (EXAMPLES / "llama3.1-70b-fp8-tp2-draft-h100.yaml").read_text()
    spec = tmp_path / "draft16.yaml"
    spec.write_text(text.replace("count: 2}", "count: 16}").replace("tp: 2, pp: 1", "tp: 8, pp: 2"))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "tritonforge", "deploy", "k8s", str(spec), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "orchestrator mode" in line and "drop the draft model" in line
    assert not out.exists()


def test_leader_command_is_one_shell_line_per_step(tmp_path: Path) -> None:
    """The mpirun line of the leader parses back (shlex) to the launch: no quoting slips."""
    spec = load_spec(_spanning_spec(tmp_path))
    plan = plan_k8s(spec, K8sOptions())
    last = _lws_leader_container(plan)["command"][2].splitlines()[-1]
    assert last.startswith("exec mpirun ")
    assert shlex.split(last)[-len(replica_launch(spec, plan.image).argv) + 2 :] == list(
        replica_launch(spec, plan.image).argv[2:]
    )


def key(d: dict) -> tuple[str, str]:
    return (d["kind"], d["metadata"]["name"])


@needs_validate
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed (kustomize not checked)")
def test_kustomize_renders_the_group_as_python_does(tmp_path: Path) -> None:
    """kubectl kustomize of the gpu overlay: valid objects, the namespace on the RoleBinding's subject, and the
    same objects the structure check renders where kubectl is absent."""
    plan = plan_k8s(load_spec(_spanning_spec(tmp_path)), K8sOptions(namespace="llm"))
    files = render_k8s(plan)
    for rel, data in files.items():
        (tmp_path / "out" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "out" / rel).write_bytes(data)
    for folder in ("overlays/gpu", "loadtest"):
        out = subprocess.run(
            ["kubectl", "kustomize", str(tmp_path / "out" / folder)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        docs = [d for d in yaml.safe_load_all(out.stdout) if d]
        assert k8s_validate.validate_objects([("kustomize", d) for d in docs]) == []
        ours, problems = k8s_validate.render_kustomization(files, folder)
        assert problems == []
        generated = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
        assert [key(d) for d in sorted(ours, key=key) if d["kind"] != "ConfigMap"] == [
            key(d) for d in sorted(docs, key=key) if d["metadata"]["name"] not in generated
        ]
        if folder == "overlays/gpu":
            lws = next(d for d in docs if d["kind"] == "LeaderWorkerSet")
            for role in ("leaderTemplate", "workerTemplate"):
                res = lws["spec"]["leaderWorkerTemplate"][role]["spec"]["containers"][0]["resources"]
                assert res["limits"]["nvidia.com/gpu"] == "8"
            binding = next(d for d in docs if d["kind"] == "RoleBinding")
            assert binding["subjects"][0]["namespace"] == "llm" == binding["metadata"]["namespace"]
