"""deploy/k8s: schema-valid for every Kubernetes version kubernetes-validate ships, and
consistent with itself, the image and the settings.

kubernetes-validate has no schema for CRDs: the ServiceMonitor (prometheus-operator)
and the kustomization are checked here by hand instead (fields used, references).
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from serving.settings import Settings
from tests.deploy.dockerfile import read_stages
from tests.support import REPO_ROOT, require_tool

K8S = REPO_ROOT / "deploy" / "k8s"
NOT_IN_CORE_SCHEMAS = {"kustomization.yaml", "servicemonitor.yaml"}
CORE_MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name not in NOT_IN_CORE_SCHEMAS)
SETTINGS_VARIABLES = {f"MNIST_SERVE_{name.upper()}" for name in Settings.model_fields}
# The oldest and newest schema sets kubernetes-validate ships.
KUBERNETES_VERSIONS = ["1.25.0", "1.37.0"]
# Prometheus durations, as the ServiceMonitor CRD's pattern accepts them.
_DURATION = re.compile(r"^(0|(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)$")


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((K8S / name).read_text())


def pod_spec() -> dict[str, Any]:
    return load("deployment.yaml")["spec"]["template"]["spec"]


def container() -> dict[str, Any]:
    (only,) = pod_spec()["containers"]
    return only


def environment() -> dict[str, str]:
    return {variable["name"]: variable["value"] for variable in container()["env"]}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_pass_kubernetes_validate_strictly(version: str) -> None:
    validate = require_tool("kubernetes-validate")
    result = subprocess.run(
        [validate, "--strict", "-k", version, *map(str, CORE_MANIFESTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # It exits 0 on a kind it has no schema for: require a pass line for every file.
    passed = re.findall(r"^INFO (\S+) passed for resource", output, re.MULTILINE)
    assert sorted(passed) == sorted(map(str, CORE_MANIFESTS)), output


def test_kustomization_lists_every_core_manifest() -> None:
    assert sorted(load("kustomization.yaml")["resources"]) == [p.name for p in CORE_MANIFESTS]


def test_pods_run_the_image_command_with_real_settings() -> None:
    assert "command" not in container()  # the image's CMD, i.e. tests.support.SERVE_COMMAND
    assert "args" not in container()
    assert set(environment()) <= SETTINGS_VARIABLES
    assert environment()["MNIST_SERVE_HOST"] == "0.0.0.0"


def test_container_port_is_the_one_the_server_listens_on() -> None:
    (port,) = container()["ports"]
    assert port["containerPort"] == int(environment()["MNIST_SERVE_PORT"])
    annotations = load("deployment.yaml")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == environment()["MNIST_SERVE_PORT"]


def test_pods_run_as_the_images_non_root_user_on_a_read_only_root() -> None:
    image_user = read_stages(REPO_ROOT / "Dockerfile")[-1].last("USER") or ""
    security = pod_spec()["securityContext"]
    assert security["runAsNonRoot"] is True
    assert f"{security['runAsUser']}:{security['runAsGroup']}" == image_user
    container_security = container()["securityContext"]
    assert container_security["readOnlyRootFilesystem"] is True
    assert container_security["allowPrivilegeEscalation"] is False
    assert container_security["capabilities"]["drop"] == ["ALL"]
    # the one writable path: tempfile and prometheus-client's multiprocess files
    assert [mount["mountPath"] for mount in container()["volumeMounts"]] == ["/tmp"]


def test_pods_get_time_to_drain_before_sigkill() -> None:
    pre_stop = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace_s = float(environment()["MNIST_SERVE_SHUTDOWN_GRACE_S"])
    assert pod_spec()["terminationGracePeriodSeconds"] > float(pre_stop[1]) + grace_s


def test_containers_have_requests_and_limits() -> None:
    resources = container()["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


def test_deployment_leaves_the_replica_count_to_the_autoscaler() -> None:
    deployment = load("deployment.yaml")
    assert "replicas" not in deployment["spec"]
    target = load("hpa.yaml")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert load("hpa.yaml")["spec"]["minReplicas"] >= 2  # the PDB can then allow a drain


def pod_labels() -> dict[str, str]:
    return load("deployment.yaml")["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize(
    ("manifest", "path"),
    [
        ("deployment.yaml", ("spec", "selector", "matchLabels")),
        ("service.yaml", ("spec", "selector")),
        ("pdb.yaml", ("spec", "selector", "matchLabels")),
    ],
)
def test_selectors_match_the_pods(manifest: str, path: tuple[str, ...]) -> None:
    selector: Any = load(manifest)
    for key in path:
        selector = selector[key]
    assert selector.items() <= pod_labels().items()


def test_service_targets_the_named_container_port() -> None:
    (port,) = load("service.yaml")["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container()["ports"]}


def test_servicemonitor_scrapes_the_service_metrics_port() -> None:
    monitor, service = load("servicemonitor.yaml"), load("service.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    service_ports = {port["name"] for port in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        # Only fields of the CRD's Endpoint type, with the types its schema asks for.
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == "/metrics"
        assert _DURATION.match(endpoint["interval"])
        assert _DURATION.match(endpoint["scrapeTimeout"])


def test_image_in_kustomization_is_the_one_the_deployment_names() -> None:
    image_names = {image["name"] for image in load("kustomization.yaml")["images"]}
    assert container()["image"].split(":")[0] in image_names
