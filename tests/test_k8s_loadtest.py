"""`deploy k8s`'s load test: a Locust master Job + N worker pods behind a headless Service.

The rendered master and worker commands run here for real (Locust, tritonforge's locustfile, a real CPU
Triton serving the tiny demo repository); only the cluster's names are replaced by local addresses.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tritonforge.builder.spec import load_spec
from tritonforge.ensembles import k8s_validate
from tritonforge.ensembles.k8s import LOCUST_MASTER_PORT, K8sOptions, objects, plan_k8s, render_k8s
from tritonforge.ensembles.server import free_port

from .conftest import EXAMPLES, tiny_variant

needs_validate = pytest.mark.skipif(not k8s_validate.available(), reason="kubernetes-validate not installed")


def _by_name(files: dict[str, bytes]) -> dict[str, dict]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for _, o in objects(files, "loadtest")}


@needs_validate
def test_master_job_workers_and_headless_service() -> None:
    plan = plan_k8s(load_spec(EXAMPLES / "cpu-demo.yaml"), K8sOptions())
    load = _by_name(render_k8s(plan))
    assert k8s_validate.validate_objects(list(load.items())) == []
    svc, master, workers = (
        load["Service/cpu-demo-locust-master"],
        load["Job/cpu-demo-loadtest"],
        load["Job/cpu-demo-loadtest-workers"],
    )
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"][0]["port"] == LOCUST_MASTER_PORT
    # The Service selects the master pod, and only it.
    master_labels = master["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= master_labels.items()
    assert not svc["spec"]["selector"].items() <= workers["spec"]["template"]["metadata"]["labels"].items()
    n = plan.loadtest["workers"]
    assert n == 2 and workers["spec"]["parallelism"] == workers["spec"]["completions"] == n
    master_cmd = master["spec"]["template"]["spec"]["containers"][0]["args"][0]
    worker_cmd = workers["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert f"--expect-workers {n}" in master_cmd and "--master " in master_cmd
    assert f"--master-host {svc['metadata']['name']} --master-port {LOCUST_MASTER_PORT}" in worker_cmd
    # The report is written by the master onto the reports volume.
    mounts = {
        m["name"]: m["mountPath"] for m in master["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert (
        mounts["reports"] == "/reports" and '"$OUT/locust"' in master_cmd and 'OUT="/reports/' in master_cmd
    )


def test_no_workers_is_one_tritonforge_loadtest_pod(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text((EXAMPLES / "cpu-demo.yaml").read_text() + "deploy: {loadtest_workers: 0}\n")
    load = _by_name(render_k8s(plan_k8s(load_spec(spec), K8sOptions())))
    assert sorted(load) == ["Job/cpu-demo-loadtest", "PersistentVolumeClaim/cpu-demo-reports"]
    script = load["Job/cpu-demo-loadtest"]["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "tritonforge loadtest --url http://cpu-demo-ensemble:8000" in script and "--workers" not in script


def _local(script: str, subs: dict[str, str]) -> str:
    for old, new in subs.items():
        assert old in script, old
        script = script.replace(old, new)
    return script


def test_rendered_master_and_workers_run_a_distributed_test(tmp_path: Path, tiny_demo_server) -> None:
    """The master waits for its N workers, they send the requests, the master writes Locust's report."""
    spec_path = tiny_variant("cpu-demo.yaml", tmp_path)
    plan = plan_k8s(load_spec(spec_path), K8sOptions())
    lt = plan.loadtest
    port = free_port()
    service = plan.service
    master_script = _local(
        lt["script"],
        {
            f"--master-bind-port {LOCUST_MASTER_PORT}": f"--master-bind-port {port} --master-bind-host 127.0.0.1",
            f"--host http://{service}:8000": f"--host {tiny_demo_server.http_url}",
            f"--grpc-url {service}:8001": f"--grpc-url 127.0.0.1:{tiny_demo_server.ports.grpc}",
            # Fewer users (two cores here); the rendered 60 s, as workers first load the prompt tokenizer.
            f"-u {plan.loadtest['users']} -r {plan.loadtest['users']}": "-u 2 -r 2",
            "/reports/": f"{tmp_path}/reports/",
            f"/store/{plan.spec_hash}/loadtest/": f"{tmp_path}/store/",
            "--stop-timeout 300": "--stop-timeout 60",  # the tiny model answers in seconds
        },
    )
    worker_script = _local(
        lt["worker_script"],
        {
            f"--master-host {lt['master_service']} --master-port {LOCUST_MASTER_PORT}": f"--master-host 127.0.0.1 --master-port {port}"
        },
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    logs = [tmp_path / "master.log", *(tmp_path / f"worker{i}.log" for i in range(lt["workers"]))]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for log, script in zip(logs, [master_script] + [worker_script] * lt["workers"], strict=True):
            with log.open("w") as f:
                procs.append(
                    subprocess.Popen(["sh", "-c", script], env=env, stdout=f, stderr=subprocess.STDOUT)
                )
        # A safety limit, not a measurement: 60 s of load, the stop timeout, and the processes' start-up.
        rcs = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    out = logs[0].read_text()
    assert rcs[0] == 0, out[-2000:]
    assert rcs[1:] == [0] * lt["workers"]  # each worker ends when the master ends the test
    (run,) = (tmp_path / "reports").iterdir()
    assert (run / "locust.html").is_file()
    with (run / "locust_stats.csv").open() as f:
        total = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    # The master runs no users: every request counted was sent by a worker.
    assert int(total["Request Count"]) > 0 and int(total["Failure Count"]) == 0
    assert f"report: {run}/locust.html" in out
    # The requests were made once, by the master's pod, and read by the workers.
    assert (tmp_path / "store" / run.name / "workload.jsonl").is_file()
