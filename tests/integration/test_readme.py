"""The README's first lines and its Python example are what a newcomer runs: keep them true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_opens_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make bench", "make test"]


def test_ci_runs_exactly_the_readme_test_command():
    ci = (README.parent / ".ci" / "run").read_text()
    assert [line for line in ci.splitlines() if line.startswith("make")] == ["make test"]


def test_readme_python_example_runs_in_a_fresh_interpreter():
    blocks = _python_blocks(README.read_text())
    assert blocks, "README has no python example"
    for block in blocks:
        result = subprocess.run(
            [sys.executable, "-c", block], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert "'left'" in result.stdout and "'right'" in result.stdout
