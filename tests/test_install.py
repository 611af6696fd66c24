"""`ptkhsm install` / `ptkhsm uninstall` / `ptkhsm module` (ptkhsm/install.py).

The copy is loaded by a plain C host (tests/c/host.c) from a temporary
prefix: it must find this package's Python code and keep the version lock
although no package sits beside it. ssh-agent loading the copy from
/usr/local/lib is conformance/test_openssh.py's job.
"""

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MODULE, fresh_env
from ptkhsm import __version__, install, p11kit

PTKHSM = [str(Path(sys.executable).parent / "ptkhsm")]  # the installed command, as modulepath.py runs it


def ptkhsm(*args):
    return subprocess.run([*PTKHSM, *args], capture_output=True, text=True, timeout=60)


def tree(path):
    return sorted(str(p.relative_to(path)) for p in Path(path).rglob("*"))


@pytest.fixture(scope="module")
def host(c_host):
    return c_host


def run_host(host, module, mode):
    return subprocess.run([str(host), str(module), mode], capture_output=True, text=True, timeout=120,
                          env=fresh_env())


def test_install_load_uninstall(host, tmp_path):
    """install prints the copy's path; a C host loads it; module finds it; uninstall leaves nothing"""
    before = tree(tmp_path)
    prefix = tmp_path / "usr" / "local"
    result = ptkhsm("install", "--prefix", str(prefix))
    assert result.returncode == 0, result.stderr
    copy = prefix / "lib" / "ptkhsm" / "libptkhsm.so"
    assert result.stdout == f"{copy}\n"
    assert not copy.is_symlink() and copy.resolve() == copy  # a real file: ssh-agent checks the realpath
    assert stat.S_IMODE(copy.stat().st_mode) == 0o755
    assert copy.read_bytes() == Path(MODULE).read_bytes()

    for mode in ("basic", "fork"):
        loaded = run_host(host, copy, mode)
        assert loaded.returncode == 0 and loaded.stdout.strip().endswith("ok"), loaded.stdout + loaded.stderr

    shown = ptkhsm("module", "--prefix", str(prefix))
    assert shown.stdout == f"{copy}\n", shown.stderr
    assert ptkhsm("install", "--prefix", str(prefix)).returncode == 0  # again: replaces the copy

    result = ptkhsm("uninstall", "--prefix", str(prefix))
    assert result.returncode == 0, result.stderr
    assert tree(tmp_path) == before, result.stdout
    assert ptkhsm("module", "--prefix", str(prefix)).stdout == f"{Path(MODULE).resolve()}\n"
    assert "nothing to remove" in ptkhsm("uninstall", "--prefix", str(prefix)).stdout


def test_copy_keeps_the_version_lock(host, tmp_path):
    """a copy built for another version is refused (CKR_GENERAL_ERROR) with a reason naming ptkhsm install"""
    prefix = tmp_path / "prefix"
    copy = install.install(MODULE, prefix)
    data = copy.read_bytes()
    baked = b"\0" + __version__.encode() + b"\0"
    assert data.count(baked) == 1
    copy.write_bytes(data.replace(baked, b"\0" + ("9" + __version__[1:]).encode() + b"\0"))
    result = run_host(host, copy, "calls")
    assert "C_Initialize=0x5\n" in result.stdout, result.stdout + result.stderr
    assert "does not match" in result.stderr and "ptkhsm install" in result.stderr
    # `ptkhsm module` no longer offers the copy, and says why
    shown = ptkhsm("module", "--prefix", str(prefix))
    assert shown.stdout == f"{Path(MODULE).resolve()}\n"
    assert "another build" in shown.stderr
    install.uninstall(prefix)
    assert not prefix.exists()


def test_refuses_a_file_it_did_not_write(tmp_path):
    target = tmp_path / "lib" / "ptkhsm" / "libptkhsm.so"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"someone else's")
    result = ptkhsm("install", "--prefix", str(tmp_path))
    assert result.returncode == 1 and "not written by `ptkhsm install`" in result.stderr
    assert target.read_bytes() == b"someone else's"
    with pytest.raises(install.InstallError, match="absolute"):
        install.install(MODULE, "relative")


def test_uninstall_keeps_what_appeared_since(tmp_path):
    """a directory install created but someone filled since stays, with their file"""
    prefix = tmp_path / "p"
    install.install(MODULE, prefix)
    other = prefix / "lib" / "other.so"
    other.write_bytes(b"x")
    install.uninstall(prefix)
    assert tree(tmp_path) == ["p", "p/lib", "p/lib/other.so"]


def test_p11kit_registration(tmp_path, monkeypatch):
    """--p11-kit writes the system module file naming the copy; uninstall removes it"""
    monkeypatch.setattr(p11kit, "SYSTEM_DIR", tmp_path / "etc" / "pkcs11" / "modules")
    prefix = tmp_path / "prefix"
    install.install(MODULE, prefix, register_p11kit=True)
    module_file = p11kit.SYSTEM_DIR / "ptkhsm.module"
    assert f"module: {prefix}/lib/ptkhsm/libptkhsm.so\n" in module_file.read_text()
    assert str(module_file) in install.read_manifest(prefix)["files"]
    install.uninstall(prefix)
    assert not module_file.exists() and not prefix.exists()


def test_p11kit_refusal_leaves_the_copy_removable(tmp_path, monkeypatch):
    """a p11-kit file of someone else's is not overwritten; the copy is installed and uninstall removes it"""
    monkeypatch.setattr(p11kit, "SYSTEM_DIR", tmp_path / "modules")
    p11kit.SYSTEM_DIR.mkdir()
    (p11kit.SYSTEM_DIR / "ptkhsm.module").write_text("module: /elsewhere.so\n")
    prefix = tmp_path / "prefix"
    with pytest.raises(install.InstallError, match="not registered with p11-kit"):
        install.install(MODULE, prefix, register_p11kit=True)
    install.uninstall(prefix)
    assert not prefix.exists()
    assert (p11kit.SYSTEM_DIR / "ptkhsm.module").read_text() == "module: /elsewhere.so\n"


def test_p11kit_file_rewritten_since_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(p11kit, "SYSTEM_DIR", tmp_path / "modules")
    prefix = tmp_path / "prefix"
    install.install(MODULE, prefix, register_p11kit=True)
    other = tmp_path / "other.so"
    other.write_bytes(b"x")
    p11kit.register(other, system=True)  # now names another library
    install.uninstall(prefix)
    assert f"module: {other}\n" in (p11kit.SYSTEM_DIR / "ptkhsm.module").read_text()
    assert not prefix.exists()


def test_unwritable_prefix_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = ptkhsm("install", "--prefix", str(blocker / "prefix"))
    assert result.returncode == 1 and "cannot write" in result.stderr and "Not a directory" in result.stderr
    assert tree(tmp_path) == ["file"]
