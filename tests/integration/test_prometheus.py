"""Prometheus and Grafana config against the real service: valid, firing, not rotting.

promtool checks the config and runs the alert unit tests; a real Prometheus scrapes a
real server and answers rate() and histogram_quantile() queries; every metric name in
the dashboard and the rules must be one a real /metrics exports; and two uvicorn
workers must report the exact total.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from starlette.exceptions import StarletteDeprecationWarning

from serving.app import create_app
from serving.settings import Settings
from tests.support import (
    REPO_ROOT,
    exported_metric_names,
    free_port,
    metric_samples,
    metric_value,
    require_binary,
    running_server,
)

with warnings.catch_warnings():
    # Starlette 1.x would rather drive its TestClient with httpx2; httpx 0.28 works the same.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
GRAFANA_DIR = REPO_ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "mnist-serve.json"
# Each served request writes an access line to a pipe nobody reads: keep them off.
QUIET_SERVER = {"MNIST_SERVE_ACCESS_LOG": "false"}
ONE_IMAGE = {
    "inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.5] * 784}]
}


# --- promtool ----------------------------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_prometheus_config_and_its_rules_are_valid() -> None:
    checked = promtool("check", "config", "prometheus.yml")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 12 rules found" in checked.stdout


def test_alerts_fire_on_their_unit_test_series() -> None:
    tested = promtool("test", "rules", "rules_test.yml")

    assert tested.returncode == 0, tested.stdout + tested.stderr


# --- metric names in PromQL ---------------------------------------------------------------

_PROMQL_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "bool", "offset"}
_PROMQL_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def promql_metric_names(expr: str) -> set[str]:
    """Series names an expression selects: identifiers that are not functions or labels."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\$\w+", "", expr)  # Grafana variables
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)  # label matchers, ranges
    expr = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr
    )  # grouping labels
    return {
        match.group()
        for match in _PROMQL_IDENTIFIER.finditer(expr)
        if match.group() not in _PROMQL_KEYWORDS
        and not re.match(r"\s*\(", expr[match.end() :])
        and not expr[: match.start()].endswith(("^", "e"))  # 2^30, 1e3
    }


def test_promql_metric_names_are_read_like_prometheus_would() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (model, le) (rate(a_bucket{model=~"$model"}'
        '[$__rate_interval]))) / on (model) b_total > 2^30 and up{job="x"} == bool 1'
    )

    assert promql_metric_names(expr) == {"a_bucket", "b_total", "up"}


@pytest.fixture(scope="module")
def exported_names(tiny_repo: Path) -> set[str]:
    """Every series name a real app's /metrics exports once its models are loaded."""
    with TestClient(create_app(Settings(models_dir=tiny_repo))) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    return exported_metric_names(response.text)


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_every_dashboard_query_reads_metrics_the_service_exports(
    exported_names: set[str],
) -> None:
    unknown = {
        (title, name)
        for title, expr in dashboard_exprs()
        for name in promql_metric_names(expr) - exported_names
    }

    assert len(dashboard_exprs()) >= 15
    assert all(promql_metric_names(expr) for _, expr in dashboard_exprs())
    assert unknown == set()


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_rule_reads_exported_metrics_or_recorded_ones(exported_names: set[str]) -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    known = exported_names | recorded | {"up"}

    unknown = {name for rule in rules() for name in promql_metric_names(rule["expr"]) - known}

    assert unknown == set()


def test_dashboard_uses_the_provisioned_datasource_and_a_model_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]

    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"]}
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert (uids, datasource["url"]) == ({datasource["uid"]}, "http://prometheus:9090")
    assert "model" in variables
    assert all('model=~"$model"' in expr for title, expr in dashboard_exprs() if "model" in expr)


def test_dashboard_provider_reads_where_compose_mounts_the_dashboards() -> None:
    provider = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "dashboards" / "mnist-serve.yml").read_text()
    )["providers"][0]
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())

    grafana_volumes = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in grafana_volumes


# --- a real Prometheus scraping a real server ---------------------------------------------


@contextmanager
def running_prometheus(tmp_path: Path, target: str) -> Iterator[str]:
    """Prometheus on a free loopback port, scraping ``target`` every second with our rules."""
    binary = require_binary("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROMETHEUS_DIR / "rules.yml")],
        "scrape_configs": [
            {"job_name": "mnist-serve", "static_configs": [{"targets": [target]}]},
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(json.dumps(config))
    address = f"127.0.0.1:{free_port()}"
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address={address}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://{address}"
    try:
        poll(lambda: _is_ready(url, process), timeout_s=60, what="Prometheus to be ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _is_ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"prometheus exited with {process.returncode}")
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def poll(condition: Any, *, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise TimeoutError(f"waited {timeout_s} s for {what}")


def query(prometheus_url: str, promql: str) -> list[float]:
    response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    return [float(result["value"][1]) for result in response.json()["data"]["result"]]


def infer(client: httpx.Client, base_url: str) -> None:
    response = client.post(f"{base_url}/v2/models/tiny/infer", json=ONE_IMAGE)
    assert response.status_code == 200, response.text


def test_prometheus_computes_rates_and_quantiles_from_a_real_scrape(
    tiny_repo: Path, tmp_path: Path
) -> None:
    rate = "sum(rate(mnist_serve_requests_total[10s]))"
    p99 = (
        "histogram_quantile(0.99, "
        "sum by (le) (rate(mnist_serve_request_duration_seconds_bucket[10s])))"
    )
    with (
        running_server(tiny_repo, env=QUIET_SERVER) as (base_url, _),
        running_prometheus(tmp_path, base_url.removeprefix("http://")) as prometheus,
        httpx.Client(timeout=10) as client,
    ):

        def traffic_is_seen() -> tuple[float, float] | None:
            for _ in range(10):
                infer(client, base_url)
            rates, quantiles = query(prometheus, rate), query(prometheus, p99)
            if rates and rates[0] > 0 and quantiles and math.isfinite(quantiles[0]):
                return rates[0], quantiles[0]
            return None

        requests_per_s, p99_s = poll(traffic_is_seen, timeout_s=90, what="rate and p99")
        # Triton's bare counter names and our recording rules land in Prometheus too.
        triton = poll(
            lambda: query(prometheus, 'nv_inference_request_success{model="tiny"}'),
            timeout_s=30,
            what="Triton names",
        )
        recorded = poll(
            lambda: query(prometheus, "model:mnist_serve_request_duration_seconds:p99_5m"),
            timeout_s=30,
            what="the p99 recording rule",
        )

    print(
        f"\nPrometheus: {rate} = {requests_per_s:.2f}; p99 = {p99_s * 1000:.2f} ms; "
        f"nv_inference_request_success = {sum(triton):.0f}; p99 rule = {recorded[0] * 1000:.2f} ms"
    )
    assert requests_per_s > 0
    assert 0 < p99_s <= 10
    assert sum(triton) >= 10
    assert 0 < recorded[0] <= 10


def test_two_workers_report_the_exact_total(tiny_repo: Path) -> None:
    requests = 40
    workers_env = {**QUIET_SERVER, "MNIST_SERVE_WORKERS": "2"}
    # No keep-alive: every request and scrape is a new connection, so both workers get some.
    fresh_connections = httpx.Limits(max_keepalive_connections=0)
    with (
        running_server(tiny_repo, env=workers_env) as (base_url, _),
        httpx.Client(timeout=10, limits=fresh_connections) as client,
    ):

        def served() -> float:
            scrape = metric_samples(client.get(f"{base_url}/metrics").text)
            return metric_value(scrape, "mnist_serve_requests_total", model="tiny")

        before = served()
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda _: infer(client, base_url), range(requests)))
        # A worker applies its requests' updates within FLUSH_AFTER_S (10 ms) of them.
        poll(lambda: served() >= before + requests, timeout_s=5, what="both workers' counts")
        totals = [served() for _ in range(8)]

    assert totals == [before + requests] * 8
