"""The module loaded the way users load it: by Python programs of their own, in
their own environments and of other versions (docs/hosts.md).

A host that can share its interpreter runs the HSM in process, with the
module's own packages appended to its sys.path; one that cannot (another
Python version, another version of a package the HSM needs) gets the HSM in a
separate process through p11-kit's RPC, or with ET_PTKC_HSM_PROCESS=in-process
CKR_GENERAL_ERROR naming both versions.
"""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import MODULE, TOKEN_LABEL, USER_PIN, fresh_env, init_token
from hostenv import SCRIPTS, host_venv, interpreter

OURS = "%d.%d" % sys.version_info[:2]
OTHERS = [v for v in ("3.11", "3.12", "3.13") if v != OURS]


def run(python, script, *args, env, timeout=120):
    result = subprocess.run([python, str(SCRIPTS / script), MODULE, *args], capture_output=True, text=True,
                            env=env, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def pkcs11_venv(version):
    python = interpreter(version)
    if not python:
        pytest.skip(f"no Python {version} on this machine")
    return host_venv(python, ["python-pkcs11"])


@pytest.fixture
def data():
    """An environment with its own data directory holding an initialised token,
    and nothing else of ptkhsm's: no PYTHONPATH, no PTKHSM_* variables."""
    env = {k: v for k, v in fresh_env().items() if not k.startswith(("PYTHON", "PTKHSM", "VIRTUAL_ENV"))}
    init_token(env)
    return env


def fake_package(tmp_path, name, version):
    """A package `name` at `version`, installed as pip would (module and dist-info)."""
    site = tmp_path / "site"
    (site / name).mkdir(parents=True)
    (site / name / "__init__.py").write_text(f'__version__ = "{version}"\n')
    (site / f"{name}-{version}.dist-info").mkdir()
    (site / f"{name}-{version}.dist-info" / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return str(site)


def test_same_version_venv_host_runs_in_process(data):
    """python-pkcs11 in its own venv, ptkhsm not installed there, no environment variables."""
    result, stderr = run(pkcs11_venv(OURS), "pkcs11_host.py", TOKEN_LABEL, USER_PIN, "roundtrip", env=data)
    assert result == {"ok": True, "in_process": True, "python": OURS}, stderr


def test_host_path_keeps_its_order(data, tmp_path):
    """The module's site-packages go after the host's: a module of the host's own is
    not shadowed by one of the same name in ptkhsm's environment (pytest here)."""
    site = fake_package(tmp_path, "pytest", "0.0.1")
    check = ("import ctypes, sys; import pytest; ctypes.CDLL(sys.argv[1]).C_Initialize(None); "
             "import pytest as again; print(again.__version__, sys.path.index(sys.argv[2]) < len(sys.path) - 1)")
    result = subprocess.run([pkcs11_venv(OURS), "-c", check, MODULE, site], capture_output=True, text=True,
                            env={**data, "PYTHONPATH": site}, timeout=60)
    assert result.stdout.split() == ["0.0.1", "True"], result.stderr


@pytest.mark.parametrize("package", ["cryptography", "cffi"])
def test_imported_package_of_another_version_is_refused(data, tmp_path, package):
    """In process only: CKR_GENERAL_ERROR and both versions on stderr, never a silent mix."""
    site = fake_package(tmp_path, package, "1.0")
    env = {**data, "PYTHONPATH": site, "ET_PTKC_HSM_PROCESS": "in-process"}
    code = f"import {package}, ctypes, sys; print(ctypes.CDLL(sys.argv[1]).C_Initialize(None))"
    result = subprocess.run([sys.executable, "-c", code, MODULE], capture_output=True, text=True, env=env, timeout=60)
    assert result.stdout.strip() == "5", result.stderr  # CKR_GENERAL_ERROR
    assert f"already imported {package} 1.0" in result.stderr
    assert "needs cffi 2.1.1" in result.stderr or "needs cryptography 50.0.2" in result.stderr


def test_installed_package_of_another_version_goes_to_a_separate_process(data, tmp_path):
    """Like the base interpreter with its own older cryptography in site-packages:
    not silently used; by default the HSM runs out of process and works."""
    site = fake_package(tmp_path, "cryptography", "1.0")
    env = {**data, "PYTHONPATH": site}
    refused = subprocess.run([sys.executable, str(SCRIPTS / "ctypes_host.py"), MODULE], capture_output=True,
                             text=True, env={**env, "ET_PTKC_HSM_PROCESS": "in-process"}, timeout=60)
    assert json.loads(refused.stdout)["C_Initialize"] == 5
    assert "cryptography 1.0" in refused.stderr and "needs cryptography 50.0.2" in refused.stderr
    result, stderr = run(sys.executable, "ctypes_host.py", USER_PIN, env=env)
    assert result["C_Initialize"] == 0 and result["C_GenerateKey"] == 0, result
    assert result["in_process"] is False and result["label"] == TOKEN_LABEL
    assert stderr == ""


def test_base_interpreter_does_not_use_its_own_cryptography(data):
    """The base interpreter of our venv, whatever its site-packages hold."""
    result, _ = run(os.path.realpath(sys._base_executable), "ctypes_host.py", USER_PIN, env=data)
    assert result["C_Initialize"] == 0 and result["C_GenerateKey"] == 0, result
    check = ("import ctypes, sys; ctypes.CDLL(sys.argv[1]).C_Initialize(None); "
             "import cryptography; print(cryptography.__version__ if 'ptkhsm' in sys.modules else 'separate')")
    out = subprocess.run([os.path.realpath(sys._base_executable), "-c", check, MODULE], capture_output=True,
                         text=True, env=data, timeout=60)
    assert out.stdout.strip() in ("50.0.2", "separate"), out.stdout + out.stderr


@pytest.mark.parametrize("version", OTHERS)
def test_ctypes_host_of_another_version(data, version):
    python = interpreter(version)
    if not python:
        pytest.skip(f"no Python {version} on this machine")
    result, stderr = run(python, "ctypes_host.py", USER_PIN, env=data)
    assert result["C_Initialize"] == 0 and result["C_GenerateKey"] == 0 and result["C_Finalize"] == 0, result
    assert result["in_process"] is False and result["label"] == TOKEN_LABEL, result
    assert stderr == ""


def test_forced_separate_process(data):
    env = {**data, "ET_PTKC_HSM_PROCESS": "separate"}
    result, _ = run(pkcs11_venv(OURS), "pkcs11_host.py", TOKEN_LABEL, USER_PIN, "roundtrip", env=env)
    assert result["ok"] and result["in_process"] is False


def test_bad_process_mode_names_the_item(data):
    env = {**data, "ET_PTKC_HSM_PROCESS": "sometimes"}
    result = subprocess.run([sys.executable, str(SCRIPTS / "ctypes_host.py"), MODULE], capture_output=True,
                            text=True, env=env, timeout=60)
    assert json.loads(result.stdout)["C_Initialize"] == 5
    assert "ET_PTKC_HSM_PROCESS='sometimes'" in result.stderr


def test_python_pkcs11_host_of_another_version_shares_the_tokens(data):
    """A 3.12 host (separate process) and our 3.11 host (in process) on one data directory."""
    other = pkcs11_venv("3.12" if OURS != "3.12" else "3.13")
    stored, _ = run(pkcs11_venv(OURS), "pkcs11_host.py", TOKEN_LABEL, USER_PIN, "store", "shared", env=data)
    assert stored["in_process"] is True
    read, _ = run(other, "pkcs11_host.py", TOKEN_LABEL, USER_PIN, "decrypt", "shared", stored["ciphertext"], env=data)
    assert read["plaintext"] == "one data directory, two Pythons!" and read["in_process"] is False
    again, _ = run(other, "pkcs11_host.py", TOKEN_LABEL, USER_PIN, "roundtrip", env=data)
    assert again["ok"]


def _children_using(datapath):
    """Processes whose environment names this data directory (the separate HSM process)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read()
        except OSError:
            continue
        if f"ET_PTKC_SW_DATAPATH={datapath}".encode() in environ.split(b"\0"):
            found.append(int(pid))
    return found


@pytest.mark.parametrize("version", [OURS, "3.12" if OURS != "3.12" else "3.13"])
def test_killed_host_leaves_data_intact(data, version):
    """SIGKILL while keys are being written: the store stays consistent, the
    separate HSM process (if any) goes away, every key written before (and each
    one the host saw stored) is still there, and the next host works."""
    stored, _ = run(pkcs11_venv(version), "pkcs11_host.py", TOKEN_LABEL, USER_PIN, "store", "before", env=data)
    host = subprocess.Popen([pkcs11_venv(version), str(SCRIPTS / "pkcs11_host.py"), MODULE, TOKEN_LABEL,
                             USER_PIN, "loop"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=data)
    try:
        confirmed = [host.stdout.readline().strip() for _ in range(3)]  # a few keys written, then mid-call
        assert all(confirmed), host.stderr.read()
    finally:
        host.send_signal(signal.SIGKILL)
        host.wait(timeout=30)
    datapath = data["ET_PTKC_SW_DATAPATH"]
    deadline = time.monotonic() + 20
    while _children_using(datapath) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _children_using(datapath) == []
    with sqlite3.connect(os.path.join(datapath, "ptkhsm.db")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    found, _ = run(pkcs11_venv(version), "pkcs11_host.py", TOKEN_LABEL, USER_PIN, "labels", env=data)
    assert {"before", *(f"loop-{n}" for n in confirmed)} <= set(found["labels"]), found
    read, _ = run(pkcs11_venv(version), "pkcs11_host.py", TOKEN_LABEL, USER_PIN, "decrypt", "before",
                  stored["ciphertext"], env=data)
    assert read["plaintext"] == "one data directory, two Pythons!"
    result, _ = run(pkcs11_venv(version), "pkcs11_host.py", TOKEN_LABEL, USER_PIN, "roundtrip", env=data)
    assert result["ok"]


@pytest.mark.parametrize("version", [OURS, OTHERS[0]])
def test_library_copied_elsewhere_finds_its_environment(data, tmp_path, version):
    """`ptkhsm install` copies the .so out of the venv: the site-packages baked
    into it at build time still lead to ptkhsm and its pinned packages."""
    python = pkcs11_venv(version)
    copy = tmp_path / "lib" / "ptkhsm" / "libptkhsm.so"
    copy.parent.mkdir(parents=True)
    shutil.copy(MODULE, copy)
    result = subprocess.run([python, str(SCRIPTS / "ctypes_host.py"), str(copy), USER_PIN], capture_output=True,
                            text=True, env=data, timeout=120)
    out = json.loads(result.stdout)
    assert out["C_Initialize"] == 0 and out["C_GenerateKey"] == 0, result.stderr
    assert out["label"] == TOKEN_LABEL and out["in_process"] is (version == OURS)


@pytest.mark.parametrize("version", [OURS, OTHERS[0]])
def test_pykcs11_host(data, version):
    """PyKCS11 (SWIG) in its own venv: in process on the build's version, separately on another."""
    python = interpreter(version)
    if not python:
        pytest.skip(f"no Python {version} on this machine")
    result, stderr = run(host_venv(python, ["PyKCS11"]), "pykcs11_host.py", TOKEN_LABEL, USER_PIN, env=data)
    assert result == {"ok": True, "in_process": version == OURS, "python": version}, stderr


def test_refusal_reaches_a_host_configured_log(data, tmp_path):
    """A host that gave the `ptkhsm` logger a handler gets the refusal there as well as on stderr."""
    site = fake_package(tmp_path, "cryptography", "1.0")
    code = ("import io, logging, ctypes, sys; import cryptography; log = io.StringIO(); "
            "logging.getLogger('ptkhsm').addHandler(logging.StreamHandler(log)); "
            "print(ctypes.CDLL(sys.argv[1]).C_Initialize(None)); print(log.getvalue().strip())")
    env = {**data, "PYTHONPATH": site, "ET_PTKC_HSM_PROCESS": "in-process"}
    result = subprocess.run([sys.executable, "-c", code, MODULE], capture_output=True, text=True, env=env, timeout=60)
    rv, logged = result.stdout.split("\n", 1)
    assert rv == "5" and "already imported cryptography 1.0" in logged, result.stdout + result.stderr
    assert "needs cryptography 50.0.2" in result.stderr
