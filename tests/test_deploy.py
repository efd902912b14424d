"""The deployment files agree with the server: ports, probe paths, arguments
(parsed by the real CLI parser), the metric the autoscaler uses, and every
file the Dockerfile copies exists."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO_ROOT

from spoofwatch.cli import build_parser
from spoofwatch.commands.server_cmds import TOKEN_ENV
from spoofwatch.stream.server import health
from spoofwatch.stream.server.context import ServerConfig
from spoofwatch.stream.server.metrics import ACTIVE_STREAMS
from spoofwatch.stream.server.sizing import validate_workers
from spoofwatch.stream.server.workers import DRAIN_MARGIN_S

K8S = REPO_ROOT / "deploy" / "kubernetes"
PORT = ServerConfig().port


def documents() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def dockerfile() -> str:
    return (REPO_ROOT / "Dockerfile").read_text()


def entrypoint() -> list[str]:
    entries = re.findall(r"^ENTRYPOINT (\[.*\])$", dockerfile(), re.M)
    assert entries and len(set(entries)) == 1, "one ENTRYPOINT, the same in every image"
    return list(yaml.safe_load(entries[0]))


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


def test_autoscaler_scales_on_the_active_streams_metric(docs: dict[str, dict[str, Any]]) -> None:
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    (metric,) = hpa["metrics"]
    assert metric["pods"]["metric"]["name"] == ACTIVE_STREAMS
    max_streams = serve_args(entrypoint() + container(docs)["args"]).max_streams
    assert 0 < float(metric["pods"]["target"]["averageValue"]) < max_streams
    rules = yaml.safe_load(docs["ConfigMap"]["data"]["config.yaml"])["rules"]
    assert any(ACTIVE_STREAMS in r["seriesQuery"] and r["name"]["as"] == ACTIVE_STREAMS for r in rules)


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
    for check in re.findall(r"^HEALTHCHECK .*$", text, re.M):
        assert f"http://127.0.0.1:{PORT}{health.HEALTHZ}" in check
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert not {"model", "stream", "spoofwatch", "configs", "calibration"} & set(ignored)


def test_install_script_is_posix_sh() -> None:
    script = REPO_ROOT / "deploy" / "docker" / "install.sh"
    assert script.read_text().startswith("#!/bin/sh\n")
    assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0  # parses


def test_scaling_doc_names_the_real_metric_and_paths() -> None:
    text = (Path(REPO_ROOT) / "docs" / "scaling.md").read_text()
    for needle in (ACTIVE_STREAMS, health.HEALTHZ, health.READYZ, health.METRICS, "1013"):
        assert needle in text
