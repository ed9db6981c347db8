"""The health checks the images, compose and Kubernetes use, run against a real server.

The Docker HEALTHCHECK is executed as written in the Dockerfile (with this venv's
python), and every Kubernetes probe path is asked, so a renamed endpoint or a broken
one-liner fails here rather than in a cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.deploy.dockerfile import healthcheck_command, read_stages
from tests.support import REPO_ROOT, running_server, unanswered_port

DEPLOYMENT = REPO_ROOT / "deploy" / "k8s" / "deployment.yaml"


@pytest.fixture(scope="module")
def server_url(tiny_repo: Path) -> Iterator[str]:
    # With an API key: probes and health checks carry no credentials and must still pass.
    with running_server(tiny_repo, env={"MNIST_SERVE_API_KEY": "secret"}) as (url, _):
        yield url


def run_healthcheck(dockerfile: str, port: int) -> int:
    command = healthcheck_command(read_stages(REPO_ROOT / dockerfile)[-1])
    assert command[0] == "python"
    environment = {**os.environ, "MNIST_SERVE_PORT": str(port)}
    return subprocess.run(
        [sys.executable, *command[1:]], env=environment, capture_output=True, check=False
    ).returncode


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_healthcheck_passes_against_a_ready_server(dockerfile: str, server_url: str) -> None:
    assert run_healthcheck(dockerfile, port_of(server_url)) == 0


def test_healthcheck_fails_when_nothing_answers() -> None:
    with unanswered_port() as port:
        assert run_healthcheck("Dockerfile", port) != 0


def probe_paths() -> dict[str, str]:
    (container,) = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["spec"]["containers"]
    return {
        probe: container[probe]["httpGet"]["path"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe")
    }


def test_kubernetes_probes_ask_the_v2_health_endpoints() -> None:
    assert probe_paths() == {
        "startupProbe": "/v2/health/ready",
        "readinessProbe": "/v2/health/ready",
        "livenessProbe": "/v2/health/live",
    }


@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_kubernetes_probe_path_answers_ok(probe: str, server_url: str) -> None:
    assert httpx.get(server_url + probe_paths()[probe], timeout=5).status_code == 200
