"""Python hosts as users have them: each interpreter version on the machine, and
virtual environments holding a PKCS#11 binding but not ptkhsm.

Interpreters: `python3.X` on PATH if it runs, else pyenv's newest 3.X. Host
environments are created once under .cache/hosts/ (`make clean` removes them),
with the versions pyproject pins.
"""

import glob
import hashlib
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "hosts"
SCRIPTS = Path(__file__).resolve().parent / "hosts"


def interpreter(version):
    """The path of a working Python `version` ("3.12"), or None."""
    candidates = [shutil.which(f"python{version}")]
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"), reverse=True)
    for path in filter(None, candidates):
        try:
            out = subprocess.run([path, "-c", "import sys; print(sys.executable)"],
                                 capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if out.returncode == 0:
            return out.stdout.strip()
    return None


def pin(name):
    """`name==version` as pyproject.toml pins it (dependencies or the test extra)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"] + project["optional-dependencies"]["test"]:
        if re.split(r"[=<>\[ ]", requirement, maxsplit=1)[0].lower() == name.lower():
            return requirement
    raise KeyError(name)


def host_venv(python, packages):
    """The python of a venv made by `python` with `packages` (pinned names) installed; cached."""
    requirements = [pin(name) for name in packages]
    version = subprocess.run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    key = hashlib.sha256("\n".join([python, *requirements]).encode()).hexdigest()[:10]
    venv = CACHE / f"py{version}-{key}"
    ready = venv / ".ready"
    if not ready.exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *requirements],
                       check=True, capture_output=True)
        ready.touch()
    return str(venv / "bin" / "python")
