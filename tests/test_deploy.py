"""The deployment files agree with the server: ports, probe paths, arguments
(parsed by the real CLI parser), the metrics the autoscaler uses, every file
the Dockerfile copies exists, and the image's cache preparation leaves
everything serve loads (run for real, then served from a read-only cache)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO_ROOT
from prometheus_client.parser import text_string_to_metric_families

from spoofwatch.cli import build_parser
from spoofwatch.commands.server_cmds import MODEL_ENV, TOKEN_ENV
from spoofwatch.paths import HOME_ENV
from spoofwatch.stream.server import health
from spoofwatch.stream.server.context import ServerConfig
from spoofwatch.stream.server.metrics import ACTIVE_STREAMS, ServerMetrics
from spoofwatch.stream.server.sizing import validate_workers
from spoofwatch.stream.server.workers import DRAIN_MARGIN_S

K8S = REPO_ROOT / "deploy" / "kubernetes"
DOCKER = REPO_ROOT / "deploy" / "docker"
PORT = ServerConfig().port
#: The init the images run as PID 1 (forwards signals, reaps orphans).
INIT = ["tini", "--"]


def documents() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def dockerfile() -> str:
    return (REPO_ROOT / "Dockerfile").read_text()


def entrypoint() -> list[str]:
    """The images' serve command, without the init in front of it."""
    entries = re.findall(r"^ENTRYPOINT (\[.*\])$", dockerfile(), re.M)
    assert entries and len(set(entries)) == 1, "one ENTRYPOINT, the same in every image"
    argv = list(yaml.safe_load(entries[0]))
    assert argv[: len(INIT)] == INIT, "an init as PID 1"
    return argv[len(INIT) :]


def image_stages() -> dict[str, str]:
    """The text of each image stage (``cpu``, ``cuda``) of the Dockerfile."""
    parts = re.split(r"^FROM \S+ AS (\w+)$", dockerfile(), flags=re.M)
    return {name: body for name, body in zip(parts[1::2], parts[2::2], strict=True) if name != "wheel"}


def prepare_env(stage: str) -> dict[str, str]:
    """The variables a stage's ``RUN ... spoofwatch-prepare`` line sets for prepare.sh."""
    (line,) = re.findall(r"^RUN .*spoofwatch-prepare$", stage, re.M)
    words = shlex.split(line.split("&&")[-1])
    assert words[-1] == "spoofwatch-prepare"
    return dict(w.split("=", 1) for w in words[:-1])


def serve_args(argv: list[str]) -> Any:
    assert argv[:2] == ["spoofwatch", "serve"]
    args = build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown option
    assert args.command == "serve"
    return args


@pytest.fixture(scope="module")
def docs() -> dict[str, dict[str, Any]]:
    return documents()


def container(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (c,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def test_deployment_runs_a_valid_serve_command_on_the_server_port(docs: dict[str, dict[str, Any]]) -> None:
    c = container(docs)
    args = serve_args(entrypoint() + c["args"])
    assert args.port == PORT and args.host == "0.0.0.0"
    validate_workers(args.workers, args.max_streams)  # what serve checks before loading the model
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"ws": PORT}
    token = next(e for e in c["env"] if e["name"] == TOKEN_ENV)
    assert token["valueFrom"]["secretKeyRef"]["name"] == "spoofwatch-token"
    grace = docs["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > args.shutdown_grace_s + DRAIN_MARGIN_S  # Kubernetes waits for the drain before SIGKILL


def test_probes_use_the_real_routes(docs: dict[str, dict[str, Any]]) -> None:
    c = container(docs)
    for probe in ("livenessProbe", "startupProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == health.HEALTHZ and get["path"] in health.PUBLIC_PATHS  # no token needed
        assert get["port"] == "ws"
    command = c["readinessProbe"]["exec"]["command"]
    assert command[:2] == ["python", "-c"]
    assert f"http://127.0.0.1:{PORT}{health.READYZ}" in command[2]
    assert f"os.environ['{TOKEN_ENV}']" in command[2]  # /readyz needs the token
    compile(command[2], "<readinessProbe>", "exec")


def test_service_and_monitoring_point_at_the_server(docs: dict[str, dict[str, Any]]) -> None:
    svc = docs["Service"]["spec"]
    assert svc["sessionAffinity"] == "None"
    assert [p["targetPort"] for p in svc["ports"]] == ["ws"]
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert svc["selector"] == labels
    (endpoint,) = docs["PodMonitor"]["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == health.METRICS and endpoint["port"] == "ws"
    assert endpoint["authorization"]["credentials"]["name"] == "spoofwatch-token"


def quantity(value: str) -> float:
    """A Kubernetes quantity such as ``750m`` or ``2``."""
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def test_autoscaler_scales_on_utilisation_of_what_a_pod_admits(docs: dict[str, dict[str, Any]]) -> None:
    """Not on a stream count: admission caps a pod at its measured capacity,
    often below any fixed count (13-22 per worker on a 2-core VM), and the HPA
    then never scaled out. The adapter's rule divides the active streams by
    what the pod admits, from metrics the server really exports."""
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    (metric,) = hpa["metrics"]
    target = metric["pods"]["target"]
    assert target["type"] == "AverageValue" and 0 < quantity(target["averageValue"]) < 1
    rules = yaml.safe_load(docs["ConfigMap"]["data"]["config.yaml"])["rules"]
    (rule,) = [r for r in rules if r["name"]["as"] == metric["pods"]["metric"]["name"]]
    assert ACTIVE_STREAMS in rule["seriesQuery"] and rule["metricsQuery"].startswith("max(<<.Series>>")
    denominator = rule["metricsQuery"].split(" / ", 1)[1]
    assert "spoofwatch_capacity_streams" in denominator and "spoofwatch_max_streams" in denominator
    exported = {f.name for f in text_string_to_metric_families(ServerMetrics("cpu", 1).exposition().decode())}
    for name in re.findall(r"\bspoofwatch_\w+", rule["metricsQuery"]):
        assert name in exported, f"the adapter rule reads {name}, which the server does not export"
    doc = " ".join((REPO_ROOT / "docs" / "scaling.md").read_text().split())
    assert " ".join(rule["metricsQuery"].split()) in doc, "docs/scaling.md shows the rule in use"


def test_dockerfile_copies_existing_files_and_serves_the_port() -> None:
    text = dockerfile()
    stages = re.findall(r"^FROM (\S+) AS (\w+)$", text, re.M)
    assert {name for _, name in stages} >= {"wheel", "cpu", "cuda"}
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S+-cudnn-runtime-\S+$", text, re.M)
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        *sources, _ = shlex.split(line)
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert (REPO_ROOT / "deploy/docker/install.sh").stat().st_mode & 0o111
    assert re.findall(r"^EXPOSE (\d+)$", text, re.M) == [str(PORT)] * 2
    for cmd in re.findall(r"^CMD (\[.*\])$", text, re.M):
        serve_args(entrypoint() + list(yaml.safe_load(cmd)))
    startup = container(documents())["startupProbe"]
    for check in re.findall(r"^HEALTHCHECK .*$", text, re.M):
        assert f"http://127.0.0.1:{PORT}{health.HEALTHZ}" in check
        # Start-up (probe, every worker's model) may take minutes: as long as Kubernetes allows.
        start_period = re.search(r"--start-period=(\d+)s", check)
        assert start_period, "HEALTHCHECK without --start-period"
        assert int(start_period[1]) == startup["periodSeconds"] * startup["failureThreshold"]
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert not {"model", "stream", "spoofwatch", "configs", "calibration"} & set(ignored)


@pytest.mark.parametrize("name", ["install.sh", "prepare.sh"])
def test_image_scripts_are_posix_sh(name: str) -> None:
    script = DOCKER / name
    assert script.read_text().startswith("#!/bin/sh\n")
    assert script.stat().st_mode & 0o111
    assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0  # parses


def test_each_image_prepares_and_serves_its_model_device_and_precision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The MODEL build argument reaches the entrypoint (an image built with
    MODEL=aasist served aasist-l), and the cache is prepared for the image's
    own --device, at the precisions it documents (fp16 on CUDA too)."""
    stages = image_stages()
    assert set(stages) == {"cpu", "cuda"}
    for name, stage in stages.items():
        assert re.search(r"^ARG MODEL=\S+$", stage, re.M)
        assert re.search(rf"^\s*{MODEL_ENV}=\$\{{MODEL\}}", stage, re.M), f"{name}: MODEL must reach serve"
        assert "COPY deploy/docker/prepare.sh /usr/local/bin/spoofwatch-prepare" in stage
        env = prepare_env(stage)
        (cmd,) = re.findall(r"^CMD (\[.*\])$", stage, re.M)
        served = serve_args(entrypoint() + list(yaml.safe_load(cmd)))
        assert env["DEVICE"] == served.device
        assert served.precision in env["PRECISIONS"].split()
        if served.device == "cuda":
            assert "fp16" in env["PRECISIONS"].split()
    # serve reads the model the image sets (set_defaults reads the environment at parser build).
    monkeypatch.setenv(MODEL_ENV, "aasist")
    assert serve_args(entrypoint()).model == "aasist"
    monkeypatch.delenv(MODEL_ENV)
    assert serve_args(entrypoint()).model == "aasist-l"


# ---- the prepared cache, for real -------------------------------------------------


@pytest.fixture()
def image_home() -> Iterator[Path]:
    """An empty SPOOFWATCH_HOME that the image's unprivileged user can reach
    (pytest's own temporary folders are private to the user running it)."""
    with tempfile.TemporaryDirectory(prefix="spoofwatch-image-home-") as folder:
        os.chmod(folder, 0o755)
        yield Path(folder)
        for path in (Path(folder), *Path(folder).rglob("*")):  # writable again, to be removed
            if path.is_dir():
                path.chmod(0o755)


@pytest.fixture()
def shims(image_home: Path) -> Iterator[Path]:
    """A folder for the ``spoofwatch`` shim on the server user's PATH, beside
    ``image_home`` (reachable by that user), removed afterwards."""
    folder = Path(tempfile.mkdtemp(dir=image_home.parent, prefix="spoofwatch-shim-"))
    yield folder
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()


#: Linux capabilities that let root write and search folders whatever their mode.
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2
PR_CAPBSET_DROP = 24


def _drop_file_overrides() -> None:
    """In the child, before exec: root without the capabilities that ignore
    file modes, so read-only folders are read-only to it too, as to the
    images' unprivileged user (this checkout and its Python may sit in root's
    private home, which that user could not run)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def as_server_user() -> dict[str, Any]:
    """Popen arguments under which :func:`make_read_only` folders cannot be written."""
    return {"preexec_fn": _drop_file_overrides} if os.geteuid() == 0 else {}


def make_read_only(folder: Path) -> None:
    for path in (folder, *folder.rglob("*")):
        path.chmod(0o555 if path.is_dir() else 0o444)


def cli_env(home: Path, shim_dir: Path) -> dict[str, str]:
    """The image's environment: ``spoofwatch`` on PATH (this checkout), the cache, no user home."""
    shim = shim_dir / "spoofwatch"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m spoofwatch "$@"\n')
    shim.chmod(0o755)
    shim_dir.chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{shim_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
        HOME_ENV: str(home),
        "HOME": "/nonexistent",
    }


def test_a_cache_serve_cannot_write_is_one_clear_error(image_home: Path, shims: Path) -> None:
    """The image's old failure: serve had to export into a cache its user
    cannot write, and crashed with a PermissionError traceback."""
    (image_home / "onnx").mkdir()
    make_read_only(image_home)
    env = cli_env(image_home, shims)
    argv = ["spoofwatch", "serve", "--prepare-only", "--device", "cpu"]
    run = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, **as_server_user())
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    (line,) = [line for line in run.stderr.splitlines() if "error:" in line]
    assert f"cannot write to the spoofwatch cache folder {image_home / 'onnx'}" in line
    assert HOME_ENV in line and "--prepare-only" in line


@pytest.mark.slow
def test_the_image_build_prepares_everything_serve_loads(
    image_home: Path, shims: Path, onnx_aasist_l: Path
) -> None:
    """Run prepare.sh as the CPU image's build does, make the cache read-only,
    then start the image's serve command as its unprivileged user: it must
    become ready without writing anything. The full-window graph, which the old
    build made too, is copied in to save its export; the incremental graphs
    (serve used to export them at start-up, into the read-only cache) are not."""
    (image_home / "onnx").mkdir()
    (image_home / "onnx" / onnx_aasist_l.name).write_bytes(onnx_aasist_l.read_bytes())
    env = cli_env(image_home, shims)
    cpu = image_stages()["cpu"]
    env.update(prepare_env(cpu))
    env[MODEL_ENV] = re.findall(r"^ARG MODEL=(\S+)$", cpu, re.M)[0]
    env.pop("WEIGHTS_SOURCE", None)  # the packaged weights, as the default build
    prepared = subprocess.run(
        ["sh", str(DOCKER / "prepare.sh")], env=env, capture_output=True, text=True, check=False
    )
    assert prepared.returncode == 0, prepared.stderr
    before = sorted(p.name for p in (image_home / "onnx").iterdir())
    make_read_only(image_home)
    (cmd,) = re.findall(r"^CMD (\[.*\])$", cpu, re.M)
    # The image's command on a free loopback port, with one worker (this machine is small).
    argv = [*entrypoint(), *yaml.safe_load(cmd), "--port", "0", "--host", "127.0.0.1", "--workers", "1"]
    env[TOKEN_ENV] = "t0ken"
    assert serve_becomes_ready(argv, env), "serve did not become ready from the prepared cache"
    assert sorted(p.name for p in (image_home / "onnx").iterdir()) == before


def serve_becomes_ready(argv: list[str], env: dict[str, str]) -> bool:
    """Start serve; True once its workers are all ready (then SIGTERM, clean exit),
    False if it exits first. The stderr is echoed on failure."""
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True, **as_server_user())
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if re.search(r"serving .* with \d+ workers", line):
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while not ready.is_set() and proc.poll() is None:
            ready.wait(1.0)  # the loop ends on readiness or exit; nothing is timed
        if ready.is_set():
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(120) == 0
        else:
            proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        reader.join(30)
        if proc.stderr is not None:
            proc.stderr.close()
    if not ready.is_set():
        sys.stderr.write("".join(lines))
    assert "Traceback" not in "".join(lines), "".join(lines)
    return ready.is_set()


def test_scaling_doc_names_the_real_metric_and_paths() -> None:
    text = (Path(REPO_ROOT) / "docs" / "scaling.md").read_text()
    for needle in (ACTIVE_STREAMS, health.HEALTHZ, health.READYZ, health.METRICS, "1013"):
        assert needle in text
