"""Run ``docker-compose config`` and read its normalised output (v1 or v2 spellings)."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support import REPO_ROOT, require_binary

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
GPU_OVERRIDE = REPO_ROOT / "docker-compose.gpu.yml"
ENV_EXAMPLE = REPO_ROOT / "deploy" / ".env.example"
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    is_bind: bool


def compose_config(
    *files: Path, env_file: Path, profiles: tuple[str, ...] = ()
) -> tuple[dict[str, Any], str]:
    """(normalised config, stderr) of ``docker-compose config``; fails on a non-zero exit.

    Runs with a bare environment and an explicit env file, so neither the caller's
    shell nor a developer's .env changes what is checked.
    """
    binary = require_binary("docker-compose")
    command = [binary, "--project-directory", str(REPO_ROOT), "--env-file", str(env_file)]
    for file in files or (COMPOSE_FILE,):
        command += ["-f", str(file)]
    for profile in profiles:
        command += ["--profile", profile]
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = subprocess.run(
        [*command, "config"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout), result.stderr


def duration_s(value: str | int | float) -> float:
    """Compose durations ("25s", "1m30s"; v2 may give nanoseconds as a number)."""
    if isinstance(value, int | float):
        return value / 1e9
    parts = _DURATION_PART.findall(value)
    assert "".join(number + unit for number, unit in parts) == value, value
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def mounts(service: dict[str, Any]) -> list[Mount]:
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):  # v1: "source:target[:mode]"
            source, target = volume.split(":")[:2]
            found.append(Mount(source, target, source.startswith(("/", "."))))
        else:  # v2: {type, source, target, read_only}
            found.append(Mount(volume["source"], volume["target"], volume["type"] == "bind"))
    return found


def published_host_ips(service: dict[str, Any]) -> list[str]:
    addresses = []
    for port in service.get("ports", []):
        if isinstance(port, str):  # v1: "127.0.0.1:3000:3000/tcp"
            parts = port.split(":")
            addresses.append(parts[0] if len(parts) == 3 else "")
        else:
            addresses.append(port.get("host_ip", ""))
    return addresses
