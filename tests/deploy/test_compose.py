"""docker-compose.yml and its GPU override, checked by ``docker-compose config``.

Nothing here starts a container (there is no Docker engine): compose validates and
normalises the files, and the tests hold the result to the Dockerfiles, the settings
and the Prometheus, Grafana and nginx configs it mounts, so none of them can drift.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving.settings import Settings
from tests.deploy.compose import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    GPU_OVERRIDE,
    compose_config,
    duration_s,
    mounts,
    published_host_ips,
)
from tests.deploy.dockerfile import exec_form, healthcheck_command, read_stages
from tests.support import REPO_ROOT, SERVE_COMMAND

SETTINGS_VARIABLES = {f"MNIST_SERVE_{name.upper()}" for name in Settings.model_fields}
ALWAYS_ON = {"api", "proxy", "prometheus", "grafana"}
LOADTEST = {"locust-master", "locust-worker"}
Config = dict[str, Any]


@pytest.fixture(scope="module")
def empty_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
    return path


@pytest.fixture(scope="module")
def default(empty_env: Path) -> tuple[Config, str]:
    return compose_config(COMPOSE_FILE, env_file=empty_env)


@pytest.fixture(scope="module")
def loadtest(empty_env: Path) -> tuple[Config, str]:
    return compose_config(COMPOSE_FILE, env_file=empty_env, profiles=("loadtest",))


@pytest.fixture(scope="module")
def gpu(empty_env: Path) -> tuple[Config, str]:
    return compose_config(COMPOSE_FILE, GPU_OVERRIDE, env_file=empty_env)


@pytest.fixture(scope="module")
def every_variant(
    default: tuple[Config, str], loadtest: tuple[Config, str], gpu: tuple[Config, str]
) -> dict[str, tuple[Config, str]]:
    return {"default": default, "loadtest": loadtest, "gpu": gpu}


def services(variant: tuple[Config, str]) -> dict[str, Any]:
    return variant[0]["services"]


def test_compose_files_are_valid_and_need_no_unset_variable(
    every_variant: dict[str, tuple[Config, str]],
) -> None:
    # compose warns on stderr about any ${VARIABLE} without a default that is not set
    assert {name: stderr for name, (_, stderr) in every_variant.items()} == {
        name: "" for name in every_variant
    }


@pytest.mark.parametrize("variant", ["default", "gpu"])
def test_api_runs_the_command_the_tests_start(
    variant: str, every_variant: dict[str, tuple[Config, str]]
) -> None:
    assert services(every_variant[variant])["api"]["command"] == SERVE_COMMAND


@pytest.mark.parametrize("variant", ["default", "gpu"])
def test_api_environment_names_are_real_settings(
    variant: str, every_variant: dict[str, tuple[Config, str]]
) -> None:
    names = set(services(every_variant[variant])["api"]["environment"])
    assert names
    assert names <= SETTINGS_VARIABLES


@pytest.mark.parametrize(
    ("variant", "dockerfile"), [("default", "Dockerfile"), ("gpu", "Dockerfile.gpu")]
)
def test_api_builds_the_serving_stage_of_its_dockerfile(
    variant: str, dockerfile: str, every_variant: dict[str, tuple[Config, str]]
) -> None:
    build = services(every_variant[variant])["api"]["build"]
    assert build.get("dockerfile", "Dockerfile") == dockerfile
    stages = [stage.name for stage in read_stages(REPO_ROOT / dockerfile)]
    assert build["target"] in stages


def test_loadtest_services_build_a_stage_that_exists(loadtest: tuple[Config, str]) -> None:
    stages = {stage.name for stage in read_stages(REPO_ROOT / "Dockerfile")}
    for name in LOADTEST:
        assert services(loadtest)[name]["build"]["target"] in stages


def test_api_healthcheck_is_the_dockerfiles(default: tuple[Config, str]) -> None:
    serve = read_stages(REPO_ROOT / "Dockerfile")[-1]
    test = services(default)["api"]["healthcheck"]["test"]
    assert test == ["CMD", *healthcheck_command(serve)]


@pytest.mark.parametrize("variant", ["default", "gpu"])
def test_api_drains_before_compose_kills_it(
    variant: str, every_variant: dict[str, tuple[Config, str]]
) -> None:
    api = services(every_variant[variant])["api"]
    default_grace_s = Settings.model_fields["shutdown_grace_s"].default
    grace_s = float(api["environment"].get("MNIST_SERVE_SHUTDOWN_GRACE_S", default_grace_s))
    assert duration_s(api["stop_grace_period"]) > grace_s


def test_api_is_scaled_out_and_publishes_no_port_itself(default: tuple[Config, str]) -> None:
    api = services(default)["api"]
    assert int(api["deploy"]["replicas"]) >= 2
    assert "container_name" not in api  # a fixed name would forbid --scale
    assert "ports" not in api  # replicas cannot share a host port: the proxy publishes


@pytest.mark.parametrize("variant", ["default", "gpu"])
def test_api_believes_the_proxys_forwarded_header_and_is_reached_only_through_it(
    variant: str, every_variant: dict[str, tuple[Config, str]]
) -> None:
    api = services(every_variant[variant])["api"]
    trusted = Settings(forwarded_allow_ips=api["environment"]["MNIST_SERVE_FORWARDED_ALLOW_IPS"])
    # Docker picks the proxy's address, so any peer is believed: safe only while no port
    # of the api is published, so that only containers of the compose network reach it.
    assert trusted.forwarded_allow_ips == ["*"]
    assert "ports" not in api


@pytest.mark.parametrize("name", sorted(ALWAYS_ON))
def test_long_running_services_have_limits_and_restart(
    name: str, default: tuple[Config, str]
) -> None:
    service = services(default)[name]
    limits = service["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0
    assert limits["memory"]
    assert service["restart"] == "unless-stopped"


def test_published_ports_stay_on_this_machine_by_default(loadtest: tuple[Config, str]) -> None:
    addresses = {name: published_host_ips(service) for name, service in services(loadtest).items()}
    assert {address for found in addresses.values() for address in found} == {"127.0.0.1"}


def test_load_test_services_start_only_when_asked(
    default: tuple[Config, str], loadtest: tuple[Config, str]
) -> None:
    # compose v1 prints every service with its profiles; v2 drops inactive ones
    for name, service in services(default).items():
        assert (name in ALWAYS_ON) == (not service.get("profiles")), name
    assert set(services(default)) >= ALWAYS_ON
    for name in LOADTEST:
        assert services(loadtest)[name]["profiles"] == ["loadtest"]


def test_locust_targets_the_proxy_and_the_locustfile(loadtest: tuple[Config, str]) -> None:
    master, worker = services(loadtest)["locust-master"], services(loadtest)["locust-worker"]
    assert master["environment"]["LOCUST_HOST"] == "http://proxy:8000"
    assert "--master" in master["command"]
    assert "--master-host=locust-master" in worker["command"]
    for command in (master["command"], worker["command"]):
        locustfile = command[command.index("-f") + 1]
        assert (REPO_ROOT / locustfile).is_file()


def test_gpu_override_reserves_a_gpu_and_asks_for_cuda(gpu: tuple[Config, str]) -> None:
    api = services(gpu)["api"]
    devices = api["deploy"]["resources"]["reservations"]["devices"]
    assert [(device["driver"], device["capabilities"]) for device in devices] == [
        ("nvidia", ["gpu"])
    ]
    assert api["environment"]["MNIST_SERVE_DEVICE"] == "cuda"


@pytest.mark.parametrize("variant", ["default", "loadtest", "gpu"])
def test_every_bind_mount_source_exists(
    variant: str, every_variant: dict[str, tuple[Config, str]]
) -> None:
    missing = [
        (name, mount.source)
        for name, service in services(every_variant[variant]).items()
        for mount in mounts(service)
        if mount.is_bind and not Path(mount.source).exists()
    ]
    assert missing == []


def mount_source(service: dict[str, Any], target: str) -> Path:
    (found,) = [Path(mount.source) for mount in mounts(service) if mount.target == target]
    return found


def test_prometheus_scrapes_each_api_replica_on_its_port(default: tuple[Config, str]) -> None:
    prometheus = services(default)["prometheus"]
    config = yaml.safe_load(mount_source(prometheus, "/etc/prometheus/prometheus.yml").read_text())
    api_port = int(services(default)["api"]["environment"]["MNIST_SERVE_PORT"])
    discovered = [
        (names, sd["type"], sd["port"])
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for names in [sd["names"]]
    ]
    assert (["api"], "A", api_port) in discovered


def test_prometheus_rule_files_are_mounted_beside_its_config(default: tuple[Config, str]) -> None:
    prometheus = services(default)["prometheus"]
    config = yaml.safe_load(mount_source(prometheus, "/etc/prometheus/prometheus.yml").read_text())
    targets = {mount.target for mount in mounts(prometheus)}
    for rule_file in config["rule_files"]:
        target = f"/etc/prometheus/{rule_file}"
        assert target in targets
        assert mount_source(prometheus, target).is_file()


def test_grafana_finds_the_prometheus_service_and_the_dashboards(
    default: tuple[Config, str],
) -> None:
    grafana = services(default)["grafana"]
    provisioning = mount_source(grafana, "/etc/grafana/provisioning")
    datasources = [
        source
        for path in (provisioning / "datasources").glob("*.yml")
        for source in yaml.safe_load(path.read_text())["datasources"]
    ]
    assert "http://prometheus:9090" in {source["url"] for source in datasources}
    assert "9090" in " ".join(map(str, services(default)["prometheus"]["ports"]))
    providers = [
        provider
        for path in (provisioning / "dashboards").glob("*.yml")
        for provider in yaml.safe_load(path.read_text())["providers"]
    ]
    for provider in providers:
        dashboards = mount_source(grafana, provider["options"]["path"])
        assert list(dashboards.glob("*.json"))


def test_proxy_forwards_to_the_api_port(default: tuple[Config, str]) -> None:
    proxy = services(default)["proxy"]
    nginx_conf = mount_source(proxy, "/etc/nginx/nginx.conf").read_text()
    api_port = services(default)["api"]["environment"]["MNIST_SERVE_PORT"]
    assert f"http://api:{api_port};" in nginx_conf
    assert "resolver 127.0.0.11" in nginx_conf  # Docker's DNS: every replica's address


def compose_variables() -> set[str]:
    text = COMPOSE_FILE.read_text() + GPU_OVERRIDE.read_text()
    interpolated = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    passed_through = set(re.findall(r"^\s+([A-Z_][A-Z0-9_]*):\s*$", text, re.MULTILINE))
    return interpolated | passed_through


def example_variables() -> set[str]:
    return set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE))


def test_env_example_documents_exactly_the_variables_compose_reads() -> None:
    assert example_variables() == compose_variables()


def test_env_example_values_reach_the_services() -> None:
    example, stderr = compose_config(COMPOSE_FILE, env_file=ENV_EXAMPLE)
    grafana = example["services"]["grafana"]["environment"]
    assert stderr == ""
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "change-me"


def test_train_service_runs_a_valid_training_command(empty_env: Path) -> None:
    from training.__main__ import parse_args

    config, _ = compose_config(COMPOSE_FILE, env_file=empty_env, profiles=("train",))
    train = config["services"]["train"]
    stage = read_stages(REPO_ROOT / train["build"]["dockerfile"])[-1]
    assert exec_form(stage.last("ENTRYPOINT") or "null") == ["python", "-m", "training"]
    args = parse_args(train["command"])
    # relative to the image's WORKDIR, where the models mount is
    models_dir = Path(stage.last("WORKDIR") or "/") / args.out
    assert str(models_dir).rstrip("/") in {mount.target for mount in mounts(train)}
