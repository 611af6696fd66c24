"""Every installed command works: each console script pyproject.toml lists is
installed beside this interpreter, and its --help exits 0; nothing else of
ptkhsm's is installed as a command."""

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT

SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("scripts", {})


def test_installed_commands_are_the_listed_ones():
    installed = {e.name for e in importlib.metadata.distribution("ptkhsm").entry_points
                 if e.group == "console_scripts"}
    assert installed == set(SCRIPTS), "reinstall (make install): installed commands differ from pyproject's"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_exits_zero(name):
    command = Path(sys.executable).parent / name
    result = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "usage" in result.stdout.lower()
