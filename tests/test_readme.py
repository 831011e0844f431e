"""The README stays true: the Quickstart's two commands (the test one is what CI runs), and the
Python example, run top to bottom as written."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

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


def python_example() -> tuple[str, int]:
    """The first ```python block of the README and the README line it starts on."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```python\n(.+?)\n```", text, flags=re.S)
    assert match, "the README has no ```python block"
    return match.group(1), text.count("\n", 0, match.start(1)) + 1


def test_the_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """Each top-level statement in turn, so a failure names its README line; MiniLM is bundled,
    so this runs offline (about 10 s, most of it loading the model)."""
    code, first_line = python_example()
    monkeypatch.chdir(tmp_path)  # the example makes ./notes and reads ./docs/
    namespace: dict = {"__name__": "readme_example"}
    try:
        for statement in ast.parse(code).body:
            line = first_line + statement.lineno - 1
            source = ast.get_source_segment(code, statement)
            try:
                exec(compile(ast.Module([statement], type_ignores=[]), f"README.md:{line}", "exec"), namespace)
            except Exception as exc:
                pytest.fail(f"README.md line {line}: {source!r} raised {type(exc).__name__}: {exc}", pytrace=False)
    finally:
        col = namespace.get("col")
        if col is not None:
            col.close()  # closing twice is allowed; a failure above may have left it open
    assert (tmp_path / "notes").is_dir()
    assert "ship" in capsys.readouterr().out  # the first search printed its hit
