"""The module built by each other Python on the machine (3.11, 3.12, 3.13; the
full run is on the interpreter `make test` uses), with a smoke set: load, init
token, keygen, sign, a python-pkcs11 round trip, a venv host, a C host.

Each build lives in .cache/builds/py<X.Y>: its dependencies are installed
once per pyproject.toml, ptkhsm is reinstalled when its sources change (from a
copy of the tree, so builds never share build/ with the main one).
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import ROOT
from hostenv import interpreter

OURS = "%d.%d" % sys.version_info[:2]
VERSIONS = [v for v in ("3.11", "3.12", "3.13") if v != OURS]
CACHE = ROOT / ".cache" / "builds"
SOURCES = ["ptkhsm", "shim", "ctperf", "setup.py", "pyproject.toml", "README.md"]
SMOKE = ["tests/test_smoke.py", "tests/test_c_host.py::test_c_host",
         "tests/test_hosts.py::test_same_version_venv_host_runs_in_process"]


def _digest(paths):
    digest = hashlib.sha256()
    for path in sorted(p for top in paths for p in ([top] if top.is_file() else top.rglob("*"))
                       if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".so"
                       and p.name != "ctperf-driver"):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _pip(venv, *args):
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *args],
                   check=True, capture_output=True, text=True)


def build(version):
    """The python of a venv with ptkhsm built by Python `version`, or None without that Python."""
    python = interpreter(version)
    if not python:
        return None
    venv = CACHE / f"py{version}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps_key = _digest([ROOT / "pyproject.toml"]) + python
    if not (venv / ".deps").exists() or (venv / ".deps").read_text() != deps_key:
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True)
        _pip(venv, *project["build-system"]["requires"])
        _pip(venv, *project["project"]["dependencies"], *project["project"]["optional-dependencies"]["test"])
        (venv / ".deps").write_text(deps_key)
    sources_key = _digest([ROOT / name for name in SOURCES])
    if not (venv / ".sources").exists() or (venv / ".sources").read_text() != sources_key:
        with tempfile.TemporaryDirectory(prefix="ptkhsm-build-") as tmp:
            for name in SOURCES:
                source, target = ROOT / name, Path(tmp) / name
                if source.is_dir():
                    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.so", "ctperf-driver"))
                else:
                    shutil.copy(source, target)
            _pip(venv, "--no-deps", "--no-build-isolation", "--force-reinstall", tmp)
        (venv / ".sources").write_text(sources_key)
    return str(venv / "bin" / "python")


@pytest.fixture(scope="module")
def builds():
    with ThreadPoolExecutor(max_workers=len(VERSIONS)) as pool:
        return dict(zip(VERSIONS, pool.map(build, VERSIONS)))


@pytest.mark.parametrize("version", VERSIONS)
def test_smoke_on_another_python(builds, version):
    python = builds[version]
    if not python:
        pytest.skip(f"no Python {version} on this machine")
    env = {k: v for k, v in os.environ.items() if k != "PTKHSM_MODULE"}
    result = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SMOKE], cwd=ROOT,
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1] and "skipped" not in result.stdout.splitlines()[-1]
