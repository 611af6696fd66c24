"""The traps of an embedded interpreter, driven by a plain C host (tests/c/host.c).

The host dlopens the module RTLD_LOCAL, so extension modules (cryptography)
only import if the module re-exports libpython; it initialises, forks, races
C_Initialize from 16 threads, signs on 8 (ECDSA sharing the cores), and lists
interfaces.
"""

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import MODULE, ROOT, fresh_env

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def host(c_host):
    return c_host


def run(host, module, mode, **env):
    return subprocess.run([str(host), module, mode], capture_output=True, text=True, timeout=120,
                          env=fresh_env(**env))


@pytest.mark.parametrize("mode", ["basic", "interface", "fork", "threads", "gate", "sign"])
def test_c_host(host, mode):
    result = run(host, MODULE, mode)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")


def _copy_module(tmp_path, init_text):
    """The .so beside a package of our choosing: its init code imports that package."""
    package = tmp_path / "ptkhsm"
    package.mkdir()
    shutil.copy(MODULE, package / "libptkhsm.so")
    (package / "__init__.py").write_text(init_text)
    return str(package / "libptkhsm.so")


def test_init_code_failure_is_general_error(host, tmp_path):
    module = _copy_module(tmp_path, 'raise ImportError("broken installation")\n')
    result = run(host, module, "calls")
    assert "C_Initialize=0x5\n" in result.stdout  # CKR_GENERAL_ERROR, never CKR_OK
    assert "C_GetSlotList=0x5\n" in result.stdout
    assert "broken installation" in result.stderr  # the reason is logged


def test_version_mismatch_refused(host, tmp_path):
    package = Path(MODULE).parent
    copy = tmp_path / "ptkhsm"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    init = copy / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', '__version__ = "9.'))
    result = run(host, str(copy / "libptkhsm.so"), "calls")
    assert "C_Initialize=0x5\n" in result.stdout
    assert "does not match" in result.stderr


def test_config_error_names_the_item(host):
    result = run(host, MODULE, "calls", ET_PTKC_SW_USER_SLOTS="many")
    assert "C_Initialize=0x5\n" in result.stdout
    assert "ET_PTKC_SW_USER_SLOTS" in result.stderr


def test_bad_input_walk(tmp_path):
    """tests/c/badinput.c: NULLs, bad handles, short buffers, malformed templates, calls out of order."""
    binary = tmp_path / "badinput"
    subprocess.run(["gcc", "-Wall", "-Werror", "-I", str(ROOT / "shim" / "include"), "-o", str(binary),
                    str(HERE / "c" / "badinput.c"), "-ldl"], check=True)
    result = subprocess.run([str(binary), MODULE], capture_output=True, text=True, timeout=120, env=fresh_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("checks ok")


def test_unreadable_python_is_general_error_not_exit(host):
    """A user who may not read the build's Python gets CKR_GENERAL_ERROR and a reason,
    never a host process killed by Python's fatal start-up error."""
    import sysconfig
    stdlib = sysconfig.get_paths()["stdlib"]
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if subprocess.run(nobody + ["test", "-r", f"{stdlib}/encodings/__init__.py"]).returncode == 0:
        pytest.skip(f"{stdlib} is readable by nobody: nothing to refuse")
    libpython = Path(sysconfig.get_config_var("LIBDIR")) / sysconfig.get_config_var("INSTSONAME")
    if subprocess.run(nobody + ["sh", "-c", f"test -r {libpython} || ldconfig -p | grep -q {libpython.name}"]).returncode:
        pytest.skip(f"{libpython} is not readable by nobody: the loader refuses the module before any of its code runs")
    public = Path(tempfile.mkdtemp(prefix="ptkhsm-nobody-"))  # pytest's tmp_path is root-only
    try:
        public.chmod(0o777)
        shutil.copy(host, public / "host")
        shutil.copy(MODULE, public / "libptkhsm.so")
        result = subprocess.run(nobody + ["env", f"HOME={public}", str(public / "host"),
                                          str(public / "libptkhsm.so"), "calls"],
                                capture_output=True, text=True, timeout=60,
                                env=fresh_env(ET_PTKC_SW_DATAPATH=str(public / "data")))
    finally:
        shutil.rmtree(public)
    assert result.returncode == 0, result.stderr
    assert "C_Initialize=0x5\n" in result.stdout and "C_GetSlotList=0x5\n" in result.stdout
    assert "cannot read the Python standard library" in result.stderr
