"""The `tritonforge` command line. User errors are caught once, here, and printed as one line."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import click

import tritonforge
from tritonforge.builder.build_cli import build_command, plan_command
from tritonforge.ensembles.cli import router_group
from tritonforge.errors import UserError
from tritonforge.loadtest.cli import loadtest_group


def _echo_json(obj: object) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(tritonforge.__version__, prog_name="tritonforge")
def cli() -> None:
    """Plan and build quantized TensorRT-LLM engines, emit Triton model repositories, load-test them.

    \b
    Typical flow:
      tritonforge spec check examples/cpu-demo.yaml
      tritonforge emit examples/cpu-demo.yaml -o out/repo
      tritonforge serve out/repo
      tritonforge generate "def fibonacci(" --stream
      tritonforge loadtest --url http://127.0.0.1:8000 --model ensemble --duration 20s -o out/load
    """


# --- spec -------------------------------------------------------------------------------------------
@cli.group("spec")
def spec_group() -> None:
    """Inspect and check deployment specs."""


@spec_group.command("schema")
def spec_schema() -> None:
    """Print the JSON schema of the deployment spec."""
    from tritonforge.builder.spec import spec_json_schema

    _echo_json(spec_json_schema())


@spec_group.command("check")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the resolved spec (defaults filled) as JSON.")
def spec_check(spec: str, as_json: bool) -> None:
    """Validate SPEC; exit 2 with a one-line reason when it is broken.

    Checks the YAML (UTF-8, no duplicate keys), every field, names (none may collide with a generated
    model), remote tiers (http(s) only, keys only by environment variable name), and limits against
    the model's config.json when it is here or matches a fixture. Warnings go to stderr."""
    from tritonforge.builder.rules import check_model_limits
    from tritonforge.builder.spec import load_spec

    s = load_spec(spec)
    limit_errors = check_model_limits(s)
    if limit_errors:
        raise UserError(f"{spec}: {limit_errors[0].message}")
    if as_json:
        _echo_json(s.model_dump(mode="json"))
        return
    tiers = ", ".join(f"{t.name} ({t.runtime.value}, {t.quantization.format.value})" for t in s.tiers)
    click.echo(
        f"ok: {s.name}: {len(s.tiers)} tier(s): {tiers}; router {'on' if s.router.enabled else 'off'}, "
        f"cache {'on' if s.cache.enabled else 'off'}"
    )


# --- emit / validate ----------------------------------------------------------------------------------
@cli.command("emit")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(file_okay=False),
    help="Repository directory to write: new, empty, or a repository tritonforge wrote before.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Also replace a repository tritonforge wrote whose files were edited since. Never replaces a "
    "directory holding anything tritonforge did not write (those are listed and left alone).",
)
@click.option(
    "--build-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Read build_manifest.json from here (engine dirs and sizes); default build/<spec name> if present.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def emit(spec: str, output: str, force: bool, build_dir: str | None, as_json: bool) -> None:
    """Render the Triton model repository for SPEC into OUTPUT (atomically).

    \b
    OUTPUT is replaced only when it is new, empty, or a repository tritonforge wrote (its
    tritonforge.lock.json lists every file in it). The new repository is written and validated in a
    temporary sibling, then swapped in: a failed or killed emit leaves the previous one as it was.
    Refused: /, your home, the current directory or a parent of it, a directory holding SPEC, a path
    inside another repository, and a target another emit is writing right now.
    """
    from tritonforge.builder.rules import check_model_limits
    from tritonforge.builder.spec import load_spec
    from tritonforge.ensembles.render import LOCK_FILE, emit_files, write_repository

    t0 = time.perf_counter()
    s = load_spec(spec)
    limit_errors = check_model_limits(s)
    if limit_errors:
        raise UserError(f"{spec}: {limit_errors[0].message}")
    if build_dir and not (Path(build_dir) / "build_manifest.json").is_file():
        raise UserError(
            f"no build_manifest.json in {build_dir}; run `tritonforge build SPEC -o {build_dir}` first"
        )
    files, plan = emit_files(s, Path(spec).resolve().parent, Path(build_dir) if build_dir else None)
    try:
        write_repository(files, Path(output), force=force, spec_path=Path(spec))
    except OSError as exc:
        raise UserError(
            f"cannot write {output}: {exc.strerror or exc} ({exc.filename}); "
            "check the path and its permissions"
        ) from None
    elapsed = time.perf_counter() - t0
    summary = {
        "repository": str(Path(output).resolve()),
        "entry_model": plan.entry_model,
        "models": [m.name for m in plan.models],
        "files": len(files),
        "seconds": round(elapsed, 3),
    }
    if as_json:
        _echo_json(summary)
        return
    click.echo(
        f"wrote {len(files)} files, {len(plan.models)} models to {summary['repository']} in {elapsed:.2f}s"
    )
    for m in plan.models:
        click.echo(f"  {m.name:<32} {m.role}")
    click.echo(f"entry model: {plan.entry_model}   next: tritonforge serve {output}")
    unbuilt = sorted(
        t
        for t, paths in json.loads(files[LOCK_FILE])["paths"].items()
        if any(v.get("source") == "placeholder" for v in paths.values())
    )
    if unbuilt:
        click.echo(
            f"note: no engines built for tier(s) {', '.join(unbuilt)}: `tritonforge serve` refuses this repository "
            f"until you run `tritonforge build {spec} -o build/{s.name}` and emit again with --build-dir "
            f"build/{s.name}",
            err=True,
        )


@cli.command("validate")
@click.argument("repo", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print problems as JSON.")
def validate(repo: str, as_json: bool) -> None:
    """Check a model repository (generated or hand-written) before a server starts."""
    from tritonforge.ensembles.validate import validate_repository

    problems = validate_repository(Path(repo))
    if as_json:
        _echo_json({"repository": repo, "ok": not problems, "problems": [str(p) for p in problems]})
    else:
        for p in problems:
            click.echo(str(p), err=True)
        if not problems:
            click.echo(f"ok: {repo}")
    if problems:
        sys.exit(1)


# --- serve --------------------------------------------------------------------------------------------
@cli.command("serve")
@click.argument("repo", type=click.Path(file_okay=False))
@click.option("--http-port", default=8000, show_default=True)
@click.option("--grpc-port", default=8001, show_default=True)
@click.option("--metrics-port", default=8002, show_default=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address the HTTP, gRPC and metrics endpoints bind (with --docker: the host address the ports are "
    "published on). Loopback keeps a test server off the network; use 0.0.0.0 only where other machines "
    "must reach it, e.g. when tritonforge serve itself runs inside a container with published ports.",
)
@click.option(
    "--docker",
    "image",
    default=None,
    help="Run the NGC container IMAGE (GPU hosts) instead of a local server: first `docker build` the "
    "repository's Dockerfile (IMAGE plus what its Python models import), then run that image.",
)
@click.option(
    "--no-build",
    is_flag=True,
    help="With --docker: run IMAGE as given, without building the repository's Dockerfile.",
)
@click.option(
    "--print", "print_only", is_flag=True, help="With --docker: print the commands (build, run), run nothing."
)
@click.option(
    "--timeout", default=300.0, show_default=True, help="Seconds to wait for all models to be READY."
)
@click.option("--log", "log_path", type=click.Path(dir_okay=False), default=None, help="Server log file.")
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write endpoints as JSON here once READY.",
)
def serve(
    repo: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    host: str,
    image: str | None,
    no_build: bool,
    print_only: bool,
    timeout: float,
    log_path: str | None,
    ready_file: str | None,
) -> None:
    """Start a real Triton server on REPO, wait until every model is READY, stop on Ctrl-C/SIGTERM.

    The server goes with this command: if `tritonforge serve` is killed, even with SIGKILL, tritonserver
    gets SIGTERM (Linux) and stops its Python models, so no orphan keeps the ports. Hand-written
    repositories are served unchanged: their Python models import from this interpreter's environment.
    A repository whose TensorRT-LLM engines were never built (or are not on this host) is refused.
    """
    import shlex
    import subprocess

    from tritonforge.ensembles import server as srv
    from tritonforge.ensembles.validate import validate_repository

    repo_path = Path(repo)
    if not repo_path.is_dir():
        raise UserError(
            f"model repository {repo!r} does not exist; run `tritonforge emit SPEC -o {repo}` first"
        )
    ports = srv.Ports(http_port, grpc_port, metrics_port)
    problems = validate_repository(repo_path)
    if problems:
        raise UserError(
            f"{problems[0]} ({len(problems)} problem(s); `tritonforge validate {repo}` lists them)"
        )
    if no_build and not image:
        raise UserError("--no-build goes with --docker IMAGE; drop it to serve locally")
    srv.check_servable(repo_path)
    if image:
        built = None if no_build else srv.deployment_image(repo_path, image)
        if built is None and not no_build:
            click.echo(
                f"note: {repo} has no Dockerfile; running {image} as given (re-emit to get one)", err=True
            )
        cmd = srv.docker_command(
            built[0] if built else image,
            repo_path,
            ports,
            mounts=srv.repository_mounts(repo_path),
            publish_host=host,
        )
        if print_only:
            if built:
                click.echo(shlex.join(built[1]))
            click.echo(shlex.join(cmd))
            return
        if built:
            rc = subprocess.call(built[1])
            if rc != 0:
                raise UserError(
                    f"`{shlex.join(built[1])}` failed (exit {rc}); fix what its output names, "
                    f"or pass --no-build to run {image} as given"
                )
        sys.exit(subprocess.call(cmd))
    server = srv.TritonServer(repo_path, ports, log_path=Path(log_path) if log_path else None, host=host)
    stop = {"flag": False}

    def _stop(*_: object) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.start()
    click.echo(
        f"starting tritonserver ({server.install.source}) on {repo_path.resolve()} — log: {server.log_path}",
        err=True,
    )
    try:
        took = server.wait_ready(timeout, on_progress=lambda line: click.echo(f"  loading: {line}", err=True))
        states = server.model_states()
        click.echo(f"READY in {took:.1f}s")
        for m in states:
            click.echo(f"  {m['name']:<32} {m.get('state', '?')}")
        click.echo(f"  HTTP    {server.http_url}   (POST /v2/models/<model>/generate, /generate_stream)")
        click.echo(f"  gRPC    {server.grpc_url}")
        click.echo(f"  metrics {server.metrics_url}")
        if ready_file:
            assert server.proc is not None  # started above, and wait_ready returned: it runs
            Path(ready_file).write_text(
                json.dumps(
                    {
                        "http": server.http_url,
                        "grpc": server.grpc_url,
                        "metrics": server.metrics_url,
                        "pid": server.proc.pid,
                    }
                )
            )
        ticks = 0
        while not stop["flag"]:
            if server.proc is None or server.proc.poll() is not None:
                raise UserError(f"tritonserver exited: {server.failure_summary()}")
            ticks += 1
            if ticks % 5 == 0:  # about once a second: a dead stub leaves Triton "ready" with requests hanging
                dead = server.dead_stubs()
                if dead:
                    raise UserError(
                        f"the Python model process of {', '.join(dead)} died and Triton 2.51 neither restarts "
                        f"it nor ends its requests; restart tritonforge serve (log: {server.log_path})"
                    )
            time.sleep(0.2)
        click.echo("stopping tritonserver", err=True)
    finally:
        server.stop()


# --- generate (a small client) -----------------------------------------------------------------------
@cli.command("generate")
@click.argument("prompt")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True)
@click.option(
    "--model", default=None, help="Model to call (default: the repository's entry: llm, else ensemble)."
)
@click.option("--max-tokens", default=64, show_default=True)
@click.option("--stream/--no-stream", default=True, show_default=True)
@click.option(
    "--temperature",
    type=float,
    default=None,
    help="Sampling temperature (sampling needs --top-k > 1 or --top-p > 0).",
)
@click.option(
    "--top-k",
    type=int,
    default=None,
    help="Sample from the k most likely tokens (TensorRT-LLM: 0/1 = greedy).",
)
@click.option("--top-p", type=float, default=None, help="Nucleus sampling.")
@click.option("--seed", type=int, default=None, help="Seed for reproducible sampling.")
@click.option("--tier", default=None, help="Force a tier (the `llm` entry model only).")
@click.option("--json", "as_json", is_flag=True, help="Print the final response as JSON.")
def generate(
    prompt: str,
    url: str,
    model: str | None,
    max_tokens: int,
    stream: bool,
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    seed: int | None,
    tier: str | None,
    as_json: bool,
) -> None:
    """Send PROMPT to a running server and print the completion (streamed token by token)."""
    from tritonforge.ensembles.client import pick_entry_model, stream_generate

    model = model or pick_entry_model(url)
    body: dict[str, object] = {"text_input": prompt, "max_tokens": max_tokens}
    for key, value in (
        ("temperature", temperature),
        ("top_k", top_k),
        ("top_p", top_p),
        ("seed", seed),
        ("tier", tier),
    ):
        if value is not None:
            body[key] = value
    t0 = time.perf_counter()
    first = None
    pieces: list[str] = []
    tokens = 0
    facts: dict[str, object] = {}
    for event in stream_generate(url, model, body, stream=stream):
        if first is None:
            first = time.perf_counter() - t0
        text = str(event.get("text_output", ""))
        pieces.append(text)
        tokens += int(event.get("num_output_tokens") or 0)
        facts.update({k: event[k] for k in ("tier", "cache_status", "acceptance_rate") if k in event})
        if not as_json:
            click.echo(text, nl=False)
    total = time.perf_counter() - t0
    if as_json:
        _echo_json(
            {
                "model": model,
                "text_output": "".join(pieces),
                "chunks": len(pieces),
                "num_output_tokens": tokens,
                "ttft_s": first,
                "e2e_s": total,
                **facts,
            }
        )
        return
    click.echo()
    info = "".join(f", {k} {v}" for k, v in facts.items())
    click.echo(
        f"[{model}: {tokens} tokens in {len(pieces)} chunk(s), TTFT {1000 * (first or 0):.0f} ms, "
        f"total {1000 * total:.0f} ms{info}]",
        err=True,
    )


# --- demo model ------------------------------------------------------------------------------------
@cli.command("demo-model")
@click.option(
    "--name",
    type=click.Choice(["demo", "demo-draft", "tiny", "tiny-draft"]),
    default="demo",
    show_default=True,
)
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Copy the checkpoint here as well."
)
def demo_model(name: str, out: str | None) -> None:
    """Make (offline, once, cached) the embedded default model and print its directory."""
    import shutil

    from tritonforge.ensembles.render import resolve_builtin

    path = Path(resolve_builtin(f"builtin:{name}"))
    if out:
        dest = Path(out)
        if dest.exists() and any(dest.iterdir()):
            raise UserError(f"{out} is not empty; choose an empty --out directory")
        shutil.copytree(path, dest, dirs_exist_ok=True)
        path = dest
    click.echo(str(path))


# --- deploy -------------------------------------------------------------------------------------------
@cli.group("deploy")
def deploy_group() -> None:
    """Deploy a spec beyond one machine."""


@deploy_group.command("k8s")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory to write: new, empty, or one tritonforge deploy wrote before.",
)
@click.option("--namespace", default=None, help="Kubernetes namespace (default: from the spec name).")
@click.option(
    "--registry",
    default=None,
    help="Image registry prefix for the built images, e.g. registry.example.com/ml.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Also replace a directory tritonforge deploy wrote whose files were edited "
    "since. Never one holding files tritonforge did not write.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def deploy_k8s_command(
    spec: str, output: str, namespace: str | None, registry: str | None, force: bool, as_json: bool
) -> None:
    """Kustomize base + overlay for SPEC in OUTPUT: server Deployment (LeaderWorkerSet across nodes), Service,
    build Job, Redis, ServiceMonitor, HPA, PDB, NetworkPolicy, a load-test Job, and the image's Dockerfile.

    \b
    Every object is checked against the Kubernetes schemas (pip install 'tritonforge[k8s]') before writing.
    Then: build and push image/ (targets serve and tools), kubectl apply -k OUTPUT/overlays/<kind>,
    and once the server is READY: kubectl apply -k OUTPUT/loadtest.
    """
    from tritonforge.ensembles.k8s import K8sOptions, deploy_k8s

    summary = deploy_k8s(
        Path(spec), Path(output), K8sOptions(namespace=namespace, registry=registry), force=force
    )
    if as_json:
        _echo_json(summary)
        return
    checked = (
        "checked against the Kubernetes schemas"
        if summary["schema_checked"]
        else "NOT schema-checked (pip install 'tritonforge[k8s]')"
    )
    click.echo(f"wrote {summary['files']} files to {summary['directory']} ({checked})")
    click.echo(
        f"  {summary['workload']}: {summary['pods_per_replica']} pod(s) per replica, "
        f"{summary['gpus_per_pod']} GPU(s) per pod; service {summary['service']} in {summary['namespace']}"
    )
    click.echo(f"  images: {summary['image']} (target serve), {summary['tools_image']} (target tools)")
    click.echo(
        f"next: docker build --target serve -t {summary['image']} {summary['directory']}/image && "
        f"kubectl apply -k {summary['directory']}/{summary['overlay']}"
    )


# --- doctor / smoke (GPU hosts) ---------------------------------------------------------------------
@cli.command("doctor")
@click.argument("spec", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--docker",
    "image",
    default=None,
    metavar="IMAGE",
    help="Also check Docker, that IMAGE is present, GPUs inside it and its TensorRT-LLM/ModelOpt/Triton.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(spec: str | None, image: str | None, as_json: bool) -> None:
    """Is this host ready to build and serve SPEC on GPUs? One line per check: ok / warn / fail + fix.

    \b
    Checks the NVIDIA driver and GPUs (nvidia-smi), every GPU tier of SPEC planned again on the GPUs it
    gets here (compute capability and free memory against the plan's rules), MPI where the launch needs
    it, /dev/shm, the Python clients and, with --docker, the container.
    Exit status: 0 ready (warnings may be listed), 1 a blocker failed, 2 bad input."""
    from tritonforge.builder.doctor import run_doctor
    from tritonforge.builder.spec import load_spec

    result = run_doctor(load_spec(spec) if spec else None, image)
    if as_json:
        _echo_json([c.to_dict() for c in result.checks])
    else:
        for c in result.checks:
            click.echo(c.line())
        failed = [c.name for c in result.checks if c.status == "fail" and c.blocker]
        click.echo(
            f"not ready: {len(failed)} blocker(s): {', '.join(dict.fromkeys(failed))}"
            if failed
            else "ready" + (" (with warnings)" if any(c.status == "warn" for c in result.checks) else "")
        )
    if result.blocked:
        sys.exit(1)


@cli.command("smoke")
@click.option(
    "--gpu",
    "on_gpu",
    is_flag=True,
    help="Run on this host's GPU (required: the smoke test builds real engines).",
)
@click.option("--runtime", default="trtllm-engine", show_default=True, help="Target under test.")
@click.option(
    "--image",
    default=None,
    metavar="IMAGE",
    help="NGC tritonserver:<yy.mm>-trtllm-python-py3 image (default: the targeted release's).",
)
@click.option(
    "-o",
    "--output",
    "out_dir",
    default="out/smoke",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory for specs, builds, repositories, logs and smoke-report.json.",
)
@click.option("--duration", default=30, show_default=True, help="Seconds of the load test.")
@click.option(
    "--http-port",
    default=18000,
    show_default=True,
    help="Host port of the server's HTTP (gRPC +1, metrics +2).",
)
@click.option("--print", "print_only", is_flag=True, help="List the steps and their commands; run nothing.")
@click.option(
    "--compute-cap",
    default=None,
    metavar="X.Y",
    help="With --print: plan for a GPU of this compute capability instead of this host's.",
)
def smoke(
    on_gpu: bool,
    runtime: str,
    image: str | None,
    out_dir: str,
    duration: int,
    http_port: int,
    print_only: bool,
    compute_cap: str | None,
) -> None:
    """End-to-end check of a GPU host; writes OUTPUT/smoke-report.json to attach to an issue.

    \b
    Builds the embedded demo model into real engines (FP16, and FP8 where this GPU supports it) in the
    container, serves them with the backend's launch, compares greedy tokens with the CPU reference
    engine, streams through HTTP and gRPC, load-tests for --duration seconds, and stops the server.
    Exit status: 0 every step passed, 1 a step failed (the report names it), 2 no GPU or bad input."""
    from tritonforge import smoke as sm
    from tritonforge.builder import versions

    if not on_gpu:
        raise UserError("pass --gpu: the smoke test builds and serves real engines on this host's GPU")
    sm.check_runtime(runtime)
    if duration < 1:
        raise UserError("--duration must be >= 1 (seconds)")
    if compute_cap and not print_only:
        raise UserError("--compute-cap only goes with --print; a real run uses this host's GPU")
    if compute_cap:
        cap, name = sm.parse_compute_cap(compute_cap), None
    else:
        first, _ = sm.detect_gpu()  # no GPU: one line, exit 2
        cap, name = first.sm, first.name
    cfg = sm.SmokeConfig(
        out_dir=Path(out_dir).resolve(),
        image=image or versions.TRITON_IMAGE,
        sm=cap,
        gpu_type=sm.catalog_for(name, cap),
        runtime=runtime,
        http_port=http_port,
        grpc_port=http_port + 1,
        metrics_port=http_port + 2,
        load_seconds=duration,
    )
    steps = sm.plan_steps(cfg)
    _, skipped = sm.plan_precisions(cfg)
    if print_only:
        click.echo(f"smoke plan for sm{cap} ({cfg.gpu_type} in the planner), {runtime}, {cfg.image}:")
        for line in sm.dump_steps(steps, skipped):
            click.echo(line)
        return
    for p, why in skipped.items():
        click.echo(f"[smoke] {p}: skipped on this GPU: {why}", err=True)
    report = sm.Executor(cfg, progress=lambda m: click.echo(m, err=True)).run(steps, skipped)
    path = sm.write_report(cfg.out_dir, report)
    if report["ok"]:
        agree = ", ".join(
            f"{p} first-token {a['first_token']:.0%} exact {a['exact']:.0%}"
            for p, a in report["agreement"].items()
        )
        tput = ", ".join(
            f"{p} {t.get('output_tokens_per_s', 0):,.0f} output tok/s"
            for p, t in report["throughput"].items()
        )
        click.echo(f"smoke test passed in {report['total_s']:.0f}s: {agree}; {tput}; report: {path}")
        return
    click.echo(f"smoke test FAILED at {report['failed_step']}: {report['reason']}; report: {path}")
    sys.exit(1)


cli.add_command(plan_command)
cli.add_command(build_command)
cli.add_command(loadtest_group)
cli.add_command(router_group)


def main() -> None:
    """Console entry point: one line and exit code 2 for user errors, never a traceback for them."""
    try:
        code = cli.main(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
