"""What `docker build .` would send: the .dockerignore allow-list, computed by docker-py.

docker-compose v1 is written in Python and builds through docker-py, whose
``exclude_paths`` applies .dockerignore as the Docker CLI does; the tests borrow the
interpreter docker-compose runs on to compute the build context without an engine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.dockerfile import copy_sources, read_stages
from tests.support import REPO_ROOT, require_binary

DOCKERFILES = ["Dockerfile", "Dockerfile.gpu", "Dockerfile.train"]
_LIST_CONTEXT = """
import json, sys
from docker.utils.build import exclude_paths
root = sys.argv[1]
with open(root + "/.dockerignore") as ignore:
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
print(json.dumps(sorted(exclude_paths(root, patterns))))
"""


@pytest.fixture(scope="module")
def build_context() -> set[str]:
    """Paths (files and directories) docker-py would put in the build context."""
    compose = Path(require_binary("docker-compose"))
    shebang = compose.read_text(errors="replace").splitlines()[0]
    interpreter = shebang[2:].strip() if shebang.startswith("#!") else sys.executable
    result = subprocess.run(
        [*interpreter.split(), "-c", _LIST_CONTEXT, str(REPO_ROOT)],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(result.stdout))


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_copied_path_is_in_the_build_context(
    dockerfile: str, build_context: set[str]
) -> None:
    sources = {
        source.rstrip("/")
        for stage in read_stages(REPO_ROOT / dockerfile)
        for source in copy_sources(stage)
    }
    assert sources
    assert sources - build_context == set()


@pytest.mark.parametrize(
    "kept_out", [".git", ".venv", "results", "tests", ".env", "docs", ".pytest_cache"]
)
def test_local_state_stays_out_of_the_build_context(kept_out: str, build_context: set[str]) -> None:
    assert not {path for path in build_context if path.split("/")[0] == kept_out}


def test_bytecode_caches_stay_out_of_the_build_context(build_context: set[str]) -> None:
    assert not {path for path in build_context if "__pycache__" in path or path.endswith(".pyc")}


def test_images_are_pinned_to_the_tested_versions() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "deploy" / "pin_constraints.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_serving_constraints_hold_no_torch() -> None:
    pinned = (REPO_ROOT / "deploy" / "constraints.txt").read_text().splitlines()
    names = {line.split("==")[0] for line in pinned if line and not line.startswith("#")}
    assert "onnxruntime" in names
    assert not {name for name in names if name.startswith(("torch", "nvidia-"))}
