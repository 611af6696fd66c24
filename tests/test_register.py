"""`ptkhsm register` / `ptkhsm unregister`: the p11-kit module file (ptkhsm/p11kit.py).

p11-kit itself reading the file is conformance/test_p11kit.py's job; here the
file's place, content and the refusals.
"""

from pathlib import Path

import pytest

from ptkhsm import cli, p11kit


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return tmp_path / "home"


@pytest.fixture
def library(tmp_path):
    path = tmp_path / "lib" / "libptkhsm.so"
    path.parent.mkdir()
    path.write_bytes(b"\x7fELF")
    return path


def test_user_dir_follows_home_and_xdg(home, monkeypatch, tmp_path):
    assert p11kit.user_dir() == home / ".config" / "pkcs11" / "modules"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert p11kit.user_dir() == tmp_path / "xdg" / "pkcs11" / "modules"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")  # as p11-kit: only an absolute path counts
    assert p11kit.user_dir() == home / ".config" / "pkcs11" / "modules"


def test_system_file():
    assert p11kit.module_file(system=True) == Path("/etc/pkcs11/modules/ptkhsm.module")


def test_register_writes_the_module_line(home, library, capsys):
    assert cli.main(["register", "--module", str(library)]) == 0
    path = home / ".config" / "pkcs11" / "modules" / "ptkhsm.module"
    text = path.read_text()
    assert f"\nmodule: {library}\n" in text and text.startswith(p11kit.MARKER)
    assert path.stat().st_mode & 0o777 == 0o644
    assert str(path) in capsys.readouterr().out
    assert cli.main(["register", "--module", str(library)]) == 0  # again: replaced, not an error
    assert [p.name for p in path.parent.iterdir()] == ["ptkhsm.module"]


def test_register_defaults_to_this_package(home, library, monkeypatch):
    monkeypatch.setattr(cli, "module_path", lambda: str(library))
    assert cli.main(["register"]) == 0
    assert f"module: {library}\n" in (home / ".config/pkcs11/modules/ptkhsm.module").read_text()


def test_unregister_removes_it(home, library, capsys):
    cli.main(["register", "--module", str(library), "--name", "other"])
    assert cli.main(["unregister", "--name", "other"]) == 0
    assert not (home / ".config/pkcs11/modules/other.module").exists()
    assert cli.main(["unregister", "--name", "other"]) == 0
    assert "was not registered" in capsys.readouterr().out


def test_foreign_files_are_left_alone(home, library, capsys):
    path = home / ".config" / "pkcs11" / "modules" / "ptkhsm.module"
    path.parent.mkdir(parents=True)
    path.write_text("module: /somewhere/else.so\n")
    assert cli.main(["register", "--module", str(library)]) == 1
    assert cli.main(["unregister"]) == 1
    assert path.read_text() == "module: /somewhere/else.so\n"
    assert "not written by `ptkhsm register`" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--module", "relative/libptkhsm.so"], "absolute path"),
    (["--module", "/nonexistent/libptkhsm.so"], "no such library"),
    (["--name", "../escape"], "not a module name"),
])
def test_refusals(home, library, capsys, args, message):
    argv = ["register", *args] + ([] if "--module" in args else ["--module", str(library)])
    assert cli.main(argv) == 1
    assert message in capsys.readouterr().err
