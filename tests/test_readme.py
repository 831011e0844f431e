"""The README's Quickstart stays true: two commands, the test one is what CI runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_quickstart_has_two_commands():
    commands = quickstart_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)


def test_ci_runs_the_readme_test_command():
    test_command = quickstart_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci, "the test command in .ci/run must be the README's, word for word"


def test_main_job_paths_exist():
    words = shlex.split(quickstart_commands()[0])
    paths = [w for w in words if w.startswith("data/")]
    assert paths
    for p in paths:
        assert (ROOT / p).exists(), p
