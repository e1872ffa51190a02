"""An installed wheel is self-contained: `streamer dev` works far from any checkout."""

import os
import subprocess
import sys
import venv
import zipfile

import pytest

from conftest import REPO
from support.ports import free_port_block

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("streamer-*.whl")
    return built


def test_the_wheel_carries_every_template_and_the_example_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"streamer/bundled/templates/{p.relative_to(REPO / 'templates').as_posix()}"
        for p in (REPO / "templates").rglob("*")
        if p.is_file()
    }
    assert expected and expected <= names
    assert "streamer/bundled/config/streamer.example.yaml" in names


def test_streamer_dev_from_an_installed_wheel_in_an_empty_folder(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)  # dependencies from this Python
    python = env_dir / "bin" / "python"
    # Away from the checkout: a PYTHONPATH pointing at it (as when running the suite from a
    # worktree) would make pip find streamer "already installed" and the command import the tree.
    outside = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        env=outside,
    )
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    port = free_port_block()
    done = subprocess.run(
        [str(env_dir / "bin" / "streamer"), "dev", "--port", str(port), "--dir", "sandbox", "--exit-after", "6"],
        cwd=empty,
        capture_output=True,
        text=True,
        timeout=60,
        env=outside,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    templates_line = next(line for line in done.stdout.splitlines() if line.strip().startswith("Templates"))
    assert str(env_dir) in templates_line and "site-packages/streamer/bundled/templates" in templates_line
    assert len(list((empty / "sandbox" / "mail").glob("*.eml"))) >= 7
