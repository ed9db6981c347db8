"""A small Dockerfile reader for the deploy tests: stages, ENV, CMD, HEALTHCHECK, COPY.

No Docker engine runs here, so the tests read the Dockerfiles as the builder would:
continuation lines joined, comments dropped, exec forms parsed as JSON.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_HEALTHCHECK_OPTION = re.compile(r"--[a-z-]+=\S+\s+")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ENV, ...
    arguments: str  # the rest, continuation lines joined


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [item.arguments for item in self.instructions if item.keyword == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def read_instructions(path: Path) -> list[Instruction]:
    instructions: list[Instruction] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments may sit between continuation lines, and are dropped there too
        pending = f"{pending} {stripped}" if pending else stripped
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, arguments = pending.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def read_stages(path: Path) -> list[Stage]:
    stages: list[Stage] = []
    for instruction in read_instructions(path):
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append(instruction)
    return stages


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form CMD/ENTRYPOINT; raises if it is shell form."""
    parsed = json.loads(arguments)
    if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
        raise ValueError(f"not an exec form: {arguments}")
    return parsed


def environment(stage: Stage) -> dict[str, str]:
    """Every variable the stage's ENV instructions set (``K=V`` form)."""
    variables: dict[str, str] = {}
    for arguments in stage.all("ENV"):
        for pair in shlex.split(arguments):
            name, separator, value = pair.partition("=")
            if not separator:
                raise ValueError(f"ENV without '=' (legacy form): {arguments}")
            variables[name] = value
    return variables


def healthcheck_command(stage: Stage) -> list[str]:
    """The exec form after ``HEALTHCHECK [--options] CMD``."""
    arguments = stage.last("HEALTHCHECK")
    if arguments is None:
        raise ValueError("no HEALTHCHECK")
    command = _HEALTHCHECK_OPTION.sub("", arguments)
    keyword, _, rest = command.partition(" ")
    if keyword.upper() != "CMD":
        raise ValueError(f"HEALTHCHECK is not CMD: {arguments}")
    return exec_form(rest)


def copy_sources(stage: Stage) -> list[str]:
    """Build-context sources of the stage's COPY instructions (not ``--from`` copies)."""
    sources: list[str] = []
    for arguments in stage.all("COPY"):
        words = shlex.split(arguments)
        if any(word.startswith("--from") for word in words):
            continue
        paths = [word for word in words if not word.startswith("--")]
        sources.extend(paths[:-1])
    return sources
