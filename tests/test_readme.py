"""The README's commands and quick-start code stay true."""

from __future__ import annotations

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
