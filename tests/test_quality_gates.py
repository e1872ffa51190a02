"""The quality gates .ci/run applies before the tests (ruff check and format, mypy, import-linter) each fail on
a violation planted in a copy of the tree, and say where: a gate that cannot fail guards nothing."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture
def tree(tmp_path):
    """A copy of what the gates read: pyproject.toml and the package."""
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(REPO / "streamer", tmp_path / "streamer", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return tmp_path


def plant(tree, path: str, text: str) -> None:
    with open(tree / path, "a", encoding="utf-8") as file:
        file.write(text)


def gate(tree, *command: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, *command], cwd=tree, env=env, capture_output=True, text=True, timeout=300)


def test_ruff_fails_on_an_unused_import(tree):
    assert gate(tree, "-m", "ruff", "check", "--no-cache", ".").returncode == 0
    plant(tree, "streamer/outbox.py", "\nimport os  # planted\n")
    result = gate(tree, "-m", "ruff", "check", "--no-cache", ".")
    assert result.returncode == 1 and "streamer/outbox.py" in result.stdout and "F401" in result.stdout


def test_ruff_format_fails_on_unformatted_code(tree):
    assert gate(tree, "-m", "ruff", "format", "--check", "--no-cache", ".").returncode == 0
    plant(tree, "streamer/outbox.py", "\nplanted = {  'a':1 }\n")
    result = gate(tree, "-m", "ruff", "format", "--check", "--no-cache", ".")
    assert result.returncode == 1 and "streamer/outbox.py" in result.stdout


def test_mypy_fails_on_a_wrong_return_type_in_a_strict_module(tree):
    if (REPO / ".mypy_cache").is_dir():  # .ci/run has just run mypy: reuse what it knows of the libraries
        shutil.copytree(REPO / ".mypy_cache", tree / ".mypy_cache")
    plant(tree, "streamer/rules.py", "\n\ndef planted() -> int:\n    return 'not an int'\n")
    result = gate(tree, "-m", "mypy")
    assert result.returncode == 1
    assert "streamer/rules.py" in result.stdout and "Incompatible return value" in result.stdout


def test_import_linter_fails_when_the_outbox_imports_the_cli(tree):
    lint = (
        "-c",
        "import sys; from importlinter.cli import lint_imports_command; "
        "sys.argv = ['lint-imports', '--no-cache']; lint_imports_command()",
    )
    assert gate(tree, *lint).returncode == 0
    plant(tree, "streamer/outbox.py", "\nfrom streamer import cli  # noqa: E402,F401 planted\n")
    result = gate(tree, *lint)
    assert result.returncode == 1 and "streamer.outbox is not allowed to import streamer.cli" in result.stdout
