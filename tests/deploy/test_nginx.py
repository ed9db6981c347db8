"""deploy/nginx/nginx.conf: checked by ``nginx -t``, then run in front of a real server.

Only Docker's parts are swapped for the run (the `api` upstream and Docker's DNS do
not exist here; the port and /tmp paths are made private to the test); every other
line, limits, timeouts and error pages included, is the shipped file.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from serving.settings import Settings
from tests.support import (
    REPO_ROOT,
    free_port,
    log_entries,
    require_binary,
    running_server,
    unanswered_port,
    wait_for,
)

NGINX_CONF = REPO_ROOT / "deploy" / "nginx" / "nginx.conf"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
_SIZE = re.compile(r"^(\d+)([kmg]?)$")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def directive(name: str) -> str:
    (value,) = re.findall(rf"^\s*{name}\s+([^;]+);", NGINX_CONF.read_text(), re.MULTILINE)
    return value.strip()


def size_bytes(value: str) -> int:
    match = _SIZE.match(value.lower())
    assert match, value
    return int(match[1]) * _SIZE_UNITS[match[2]]


def seconds(value: str) -> float:
    assert value.endswith("s"), value
    return float(value[:-1])


def api_setting(name: str) -> str:
    """What the compose `api` service runs with: its environment, else the default."""
    environment = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["api"]["environment"]
    return str(environment.get(f"MNIST_SERVE_{name.upper()}", Settings.model_fields[name].default))


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    nginx = require_binary("nginx")
    result = subprocess.run(
        [nginx, "-t", "-c", str(NGINX_CONF), "-p", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_proxy_resolves_api_per_request_through_docker_dns() -> None:
    text = NGINX_CONF.read_text()
    assert directive("resolver").startswith("127.0.0.11 ")
    assert f"set $api_upstream http://api:{api_setting('port')};" in text
    assert "proxy_pass $api_upstream;" in text  # a variable: resolved at request time


def test_proxy_body_limit_is_the_services() -> None:
    limit = int(api_setting("max_body_bytes"))
    assert size_bytes(directive("client_max_body_size")) == limit
    assert f"over the {limit}-byte limit" in NGINX_CONF.read_text()


def test_proxy_waits_longer_than_the_service_deadline() -> None:
    assert seconds(directive("proxy_read_timeout")) > float(api_setting("request_timeout_s"))


@contextmanager
def running_proxy(upstream_url: str, work: Path) -> Iterator[str]:
    """The shipped nginx.conf in front of ``upstream_url``; yields the proxy's URL."""
    nginx = require_binary("nginx")
    port = free_port()
    text = (
        NGINX_CONF.read_text()
        .replace("http://api:8000;", f"{upstream_url};")
        .replace("listen 8000;", f"listen 127.0.0.1:{port};")
        .replace("/tmp/", f"{work}/")
    )
    conf = work / "nginx.conf"
    conf.write_text(text)
    # As root, nginx's workers would drop to `nobody`, who cannot write the temp dirs
    # here; in the unprivileged image master and workers are the same user.
    global_directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    process = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(work), "-g", global_directives],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/nginx-health", process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "nginx exited"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def proxied(
    tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """The proxy in front of a server that trusts its forwarded headers as compose's `api`
    does; yields (proxy URL, server log)."""
    work = tmp_path_factory.mktemp("nginx")
    log_path = work / "server.log"
    env = {"MNIST_SERVE_FORWARDED_ALLOW_IPS": api_setting("forwarded_allow_ips")}
    with (
        running_server(tiny_repo, env=env, log_path=log_path) as (server_url, _),
        running_proxy(server_url, work) as url,
    ):
        yield url, log_path


@pytest.fixture(scope="module")
def proxy_url(proxied: tuple[str, Path]) -> str:
    return proxied[0]


def v2_request(images: int) -> bytes:
    tensor = {"name": "input", "datatype": "FP32", "shape": [images, 1, 28, 28]}
    tensor["data"] = [0.5] * images * 784
    return httpx.Request("POST", "/", json={"inputs": [tensor]}).content


def post_infer(url: str, body: bytes) -> httpx.Response:
    return httpx.post(
        url + "/v2/models/tiny/infer",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )


def test_proxy_forwards_requests_larger_than_nginx_default(proxy_url: str) -> None:
    body = v2_request(400)
    assert len(body) > 1024 * 1024  # nginx's default client_max_body_size
    response = post_infer(proxy_url, body)
    assert response.status_code == 200
    assert response.json()["outputs"][0]["shape"] == [400, 10]


def test_oversized_request_gets_a_json_413(proxy_url: str) -> None:
    response = post_infer(proxy_url, b"0" * (int(api_setting("max_body_bytes")) + 1))
    assert response.status_code == 413
    assert "max_body_bytes" in response.json()["error"]


def test_proxy_health_answers_without_the_service(proxy_url: str) -> None:
    response = httpx.get(proxy_url + "/nginx-health", timeout=5)
    assert (response.status_code, response.text) == (200, "ok\n")


def test_proxy_gives_each_request_its_id_which_the_service_adopts(proxy_url: str) -> None:
    """nginx's $request_id (32 hex) reaches the service, which logs and echoes it, so one
    id finds a request in the proxy's log and the replica's."""
    first, second = (httpx.get(proxy_url + "/v1/models", timeout=10) for _ in range(2))
    ids = [response.headers["x-request-id"] for response in (first, second)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in ids), ids
    assert ids[0] != ids[1]


def test_proxy_passes_a_client_request_id_through(proxy_url: str) -> None:
    response = httpx.get(
        proxy_url + "/v1/models", headers={"X-Request-ID": "checkout-42"}, timeout=10
    )
    assert response.headers["x-request-id"] == "checkout-42"


@pytest.mark.parametrize("claimed", [None, "203.0.113.7", "203.0.113.7, 198.51.100.2"])
def test_the_replica_logs_the_proxys_client_whatever_forwarded_for_it_claims(
    proxied: tuple[str, Path], claimed: str | None
) -> None:
    """A client at 127.0.0.2 (nginx listens on 127.0.0.1, and reaches the replica from
    there): the replica's access line names the client, not the proxy, and a client
    cannot pass itself off as another address by sending its own X-Forwarded-For."""
    url, log_path = proxied
    request_id = f"forwarded-{len(claimed or '')}"
    headers = {"X-Request-ID": request_id}
    if claimed is not None:
        headers["X-Forwarded-For"] = claimed
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport, timeout=10) as client:
        assert client.get(url + "/v1/models", headers=headers).status_code == 200

    [line] = wait_for(
        lambda: [entry for entry in log_entries(log_path) if entry.get("request_id") == request_id],
        timeout_s=10,
        what="the replica's access line",
    )
    assert line["client"] == "127.0.0.2"


def test_no_replica_gives_a_json_502(tmp_path: Path) -> None:
    with unanswered_port() as port, running_proxy(f"http://127.0.0.1:{port}", tmp_path) as url:
        response = httpx.get(url + "/v2/health/ready", timeout=10)
    assert response.status_code == 502
    assert response.json() == {"error": "no API replica answered"}
