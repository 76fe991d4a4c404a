"""The README's Python snippets run as written.

Every ```python block of README.md is executed, in order and in one namespace, in a directory
holding the ``mnist`` use case the README tells users to create (``modelcycle init mnist``; here
on 2,000 training images so it takes seconds). The boto3 snippet talks to the real local endpoint
on loopback with *no* AWS credentials in the environment or in files, as on a fresh machine. The
endpoint is stopped by pid afterwards, also on failure.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

import pytest

from conftest import REPO, SMALL, stop_deployed, write_use_case

FENCE = re.compile(r"^(?P<indent> *)```python\n(?P<body>.*?)^(?P=indent)```", re.MULTILINE | re.DOTALL)


def python_snippets(text: str) -> list[str]:
    """The bodies of the ```python blocks of ``text`` (list-item indentation removed)."""
    snippets = []
    for match in FENCE.finditer(text):
        indent = len(match.group("indent"))
        snippets.append("".join(line[indent:] for line in match.group("body").splitlines(keepends=True)))
    return snippets


def test_the_readme_has_the_snippets_this_test_runs() -> None:
    snippets = python_snippets((REPO / "README.md").read_text())
    assert len(snippets) >= 3
    for snippet in snippets:
        ast.parse(snippet)  # each one is complete Python on its own
    assert any("boto3.client" in s and "images =" in s and "endpoint =" in s for s in snippets)


def test_readme_python_snippets_run_as_written(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    directory = write_use_case(tmp_path / "mnist", name="mnist", **SMALL)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme"}
    out = io.StringIO()
    try:
        for number, snippet in enumerate(python_snippets((REPO / "README.md").read_text()), 1):
            with contextlib.redirect_stdout(out):
                exec(compile(snippet, f"README.md python snippet {number}", "exec"), namespace)  # noqa: S102
    finally:
        stop_deployed(directory)
    printed = out.getvalue().splitlines()
    rows = ast.literal_eval(printed[-1])  # the boto3 snippet's predictions
    assert len(rows) == 3 and all(isinstance(label, int) and len(probabilities) == 10 for label, probabilities in rows)
    assert namespace["use_case"].status()["trained"]  # type: ignore[attr-defined]
