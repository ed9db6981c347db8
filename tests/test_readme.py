"""The README's commands and quick-start code stay true."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.support import PUBLISHED_MODELS, REPO_ROOT, running_server

README = (REPO_ROOT / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def test_readme_opens_with_the_run_and_test_commands() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, flags=re.DOTALL)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands[:2] == ["make run", "make test"]
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, flags=re.MULTILINE)
    assert re.search(r"^test:", makefile, flags=re.MULTILINE)


def test_ci_runs_the_readme_test_command() -> None:
    assert "\nmake test\n" in (REPO_ROOT / ".ci" / "run").read_text()


def test_quick_start_and_triton_snippets_run_against_a_real_server() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 2
    with running_server(PUBLISHED_MODELS) as (base_url, _):
        port = base_url.rsplit(":", 1)[1]
        for block in blocks:
            code = block.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace(
                "localhost:8000", f"localhost:{port}"
            )
            completed = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
            )
            assert completed.returncode == 0, completed.stderr


DIGIT_NAMES = {"four": 4, "seven": 7}


def picture_commands() -> list[str]:
    """The curl commands of README.md and docs/api-v1.md that send the sample pictures."""
    texts = [README, (REPO_ROOT / "docs" / "api-v1.md").read_text()]
    commands = []
    for text in texts:
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.DOTALL):
            joined = block.replace("\\\n", " ")
            commands += [line for line in joined.splitlines() if "@docs/" in line]
    return commands


def test_the_sample_pictures_the_docs_send_are_recognised_as_named() -> None:
    commands = picture_commands()
    assert len(commands) >= 2
    with running_server(PUBLISHED_MODELS) as (base_url, _):
        port = base_url.rsplit(":", 1)[1]
        for command in commands:
            completed = subprocess.run(
                command.replace("localhost:8000", f"localhost:{port}"),
                shell=True,
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            pictures = re.findall(r"@docs/(\w+)\.\w+", command)
            labels = [p["label"] for p in json.loads(completed.stdout)["predictions"]]
            assert labels == [DIGIT_NAMES[name] for name in pictures], command
