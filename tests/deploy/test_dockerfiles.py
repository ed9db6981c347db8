"""The Dockerfiles, read and linted without a Docker engine (none runs here)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from serving.settings import Settings
from tests.deploy.dockerfile import (
    Stage,
    copy_sources,
    environment,
    exec_form,
    healthcheck_command,
    read_stages,
)
from tests.support import REPO_ROOT, SERVE_COMMAND, require_tool

SERVE_DOCKERFILES = [REPO_ROOT / "Dockerfile", REPO_ROOT / "Dockerfile.gpu"]
ALL_DOCKERFILES = [*SERVE_DOCKERFILES, REPO_ROOT / "Dockerfile.train"]
SETTINGS_VARIABLES = {f"MNIST_SERVE_{name.upper()}" for name in Settings.model_fields}
_PIP_INSTALL = re.compile(r"pip install (?P<arguments>[^&;]*)")
_COPY_FROM = re.compile(r"--from=(\S+)")


def final_stage(dockerfile: Path) -> Stage:
    return read_stages(dockerfile)[-1]


def stages_in_image(dockerfile: Path) -> list[Stage]:
    """The final stage and every stage it is built FROM or COPYs --from."""
    stages = read_stages(dockerfile)
    by_name = {stage.name: stage for stage in stages if stage.name}
    wanted, found = [stages[-1]], []
    while wanted:
        stage = wanted.pop()
        found.append(stage)
        parents = [stage.base, *(_COPY_FROM.findall(" ".join(stage.all("COPY"))))]
        wanted.extend(by_name[name] for name in parents if name in by_name)
    return found


def pip_installs(stages: list[Stage]) -> list[str]:
    return [
        match["arguments"]
        for stage in stages
        for run in stage.all("RUN")
        for match in _PIP_INSTALL.finditer(run)
    ]


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES, ids=lambda path: path.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize("dockerfile", SERVE_DOCKERFILES, ids=lambda path: path.name)
def test_image_runs_the_command_the_tests_start(dockerfile: Path) -> None:
    stage = final_stage(dockerfile)
    assert stage.name == "serve"  # docker-compose.yml builds this target
    assert stage.last("ENTRYPOINT") is None
    assert exec_form(stage.last("CMD") or "null") == SERVE_COMMAND


@pytest.mark.parametrize("dockerfile", SERVE_DOCKERFILES, ids=lambda path: path.name)
def test_image_sets_only_real_settings(dockerfile: Path) -> None:
    variables = {
        name for name in environment(final_stage(dockerfile)) if name.startswith("MNIST_SERVE_")
    }
    assert variables, "the image configures the server through MNIST_SERVE_* variables"
    assert variables <= SETTINGS_VARIABLES


@pytest.mark.parametrize("dockerfile", SERVE_DOCKERFILES, ids=lambda path: path.name)
def test_image_listens_on_all_interfaces_and_serves_baked_models(dockerfile: Path) -> None:
    variables = environment(final_stage(dockerfile))
    assert variables["MNIST_SERVE_HOST"] == "0.0.0.0"
    assert variables["MNIST_SERVE_MODELS_DIR"] == "/app/models"
    assert "models/" in copy_sources(final_stage(dockerfile))


def test_training_image_variables_are_read_by_training() -> None:
    stage = final_stage(REPO_ROOT / "Dockerfile.train")
    training_source = "".join(path.read_text() for path in (REPO_ROOT / "training").glob("*.py"))
    variables = [name for name in environment(stage) if name.startswith("MNIST_SERVE_")]
    assert variables
    assert all(f'"{name}"' in training_source for name in variables)


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES, ids=lambda path: path.name)
def test_image_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    user = final_stage(dockerfile).last("USER") or "root"
    uid = user.split(":")[0]
    assert uid.isdigit(), "Kubernetes' runAsNonRoot can only verify a numeric uid"
    assert int(uid) != 0


@pytest.mark.parametrize("dockerfile", SERVE_DOCKERFILES, ids=lambda path: path.name)
def test_healthcheck_asks_readiness_with_the_standard_library(dockerfile: Path) -> None:
    command = healthcheck_command(final_stage(dockerfile))
    assert command[:2] == ["python", "-c"]  # slim images have no curl
    assert "/v2/health/ready" in command[2]


def test_serving_image_never_installs_torch() -> None:
    installs = pip_installs(stages_in_image(REPO_ROOT / "Dockerfile"))
    assert installs, "the serving image installs the package"
    for arguments in installs:
        assert "torch" not in arguments
        assert "[" not in arguments, f"no extra belongs in the serving image: {arguments}"


def test_gpu_image_installs_only_the_gpu_extra() -> None:
    installs = " ".join(pip_installs(stages_in_image(REPO_ROOT / "Dockerfile.gpu")))
    assert "torch" not in installs
    assert set(re.findall(r"\[(\w+)\]", installs)) == {"gpu"}


def test_training_image_takes_torch_from_the_cpu_index() -> None:
    installs = " ".join(pip_installs(stages_in_image(REPO_ROOT / "Dockerfile.train")))
    assert "https://download.pytorch.org/whl/cpu" in installs
    assert ".[train]" in installs
    constraints = (REPO_ROOT / "deploy" / "constraints-train.txt").read_text()
    # A public version: PyPI has it, so `make test` installs on any machine, and the CPU
    # index's <version>+cpu satisfies it.
    assert re.search(r"^torch==[\d.]+$", constraints, re.MULTILINE)


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES, ids=lambda path: path.name)
def test_every_install_is_constrained_to_the_tested_versions(dockerfile: Path) -> None:
    for arguments in pip_installs(stages_in_image(dockerfile)):
        assert "--constraint" in arguments or "--no-deps" in arguments, arguments


def test_loadtest_target_is_not_the_default() -> None:
    names = [stage.name for stage in read_stages(REPO_ROOT / "Dockerfile")]
    assert "loadtest" in names
    assert names[-1] == "serve"
