"""`ptkhsm serve --unix` for other users: the socket's owner, group and mode
from the configuration, each peer's credentials (SO_PEERCRED) logged and
checked again by the server, and clear refusals.

Real users of the machine (www-data in the socket's group, nobody outside
it) run pkcs11-tool on the real module (setpriv, tests/asuser.py); the tests
need root to switch users.
"""

import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from asuser import as_user, python_view
from conftest import MODULE
from netserver import Server
from ptkhsm.config import Config
from ptkhsm.errors import ConfigError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching to www-data and nobody needs root")

WWW = 33  # www-data's uid and gid on Debian


@pytest.fixture
def base():
    """A directory every user may enter (the socket's parent is created inside)."""
    path = Path(tempfile.mkdtemp(prefix="ptkhsm-access-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def server(base, tmp_path, **items):
    env = dict(os.environ, PTKHSM_LOG_LEVEL="INFO", **items)
    return Server(tmp_path / "data", "unix", env=env, socket_path=base / "run" / "hsm.sock")


def pkcs11_tool(user, socket_path, *args):
    """pkcs11-tool as `user` on the module pointed at the socket, with nothing of root's environment."""
    env = {"PATH": "/usr/bin:/bin", "ET_HSM_NETCLIENT_SERVERLIST": str(socket_path)}
    return subprocess.run(python_view(user) + as_user(user) + ["pkcs11-tool", "--module", MODULE, *args],
                          env=env, capture_output=True, text=True, timeout=120)


def test_default_socket_is_its_owners_only(base, tmp_path):
    with server(base, tmp_path) as srv:
        st = os.stat(srv.address)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
        parent = os.stat(base / "run")  # created by the server
        assert stat.S_IMODE(parent.st_mode) == 0o755
        refused = pkcs11_tool("www-data", srv.address, "-L")
    assert refused.returncode != 0
    assert "Permission denied" in refused.stderr and srv.address in refused.stderr, refused.stderr
    assert not os.path.exists(srv.address)  # removed at the stop


def test_group_member_is_served_and_logged_outsider_refused_by_the_mode(base, tmp_path):
    with server(base, tmp_path, ET_HSM_NETSERVER_SOCKET_GROUP="www-data", ET_HSM_NETSERVER_SOCKET_MODE="660") as srv:
        st = os.stat(srv.address)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), WWW, 0o660)
        member = pkcs11_tool("www-data", srv.address, "-L")
        outsider = pkcs11_tool("nobody", srv.address, "-L")
        data = tmp_path / "data"
        peek = subprocess.run(python_view("www-data") + as_user("www-data") + ["ls", str(data)],
                              capture_output=True, text=True)
        log = srv.stderr()
    assert member.returncode == 0 and "Admin slot" in member.stdout, member.stdout + member.stderr
    assert re.search(r"connection from unix pid=\d+ uid=33 user=www-data gid=33 \(worker \d+\)", log), log
    assert outsider.returncode != 0 and "C_Initialize" in outsider.stdout + outsider.stderr
    assert "Permission denied" in outsider.stderr and srv.address in outsider.stderr, outsider.stderr
    assert "uid=65534" not in log  # the kernel refused connect(): the server never saw it
    # the data directory stays private to the server's user
    st = os.stat(data)
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, 0)
    assert peek.returncode != 0 and "Permission denied" in peek.stderr, peek.stderr


def test_server_refuses_on_credentials_when_the_mode_lets_more_in(base, tmp_path):
    """A socket chmod-ed 0666 by hand: connect() passes, the server's own check refuses."""
    with server(base, tmp_path, ET_HSM_NETSERVER_SOCKET_GROUP="www-data", ET_HSM_NETSERVER_SOCKET_MODE="660") as srv:
        os.chmod(srv.address, 0o666)
        outsider = pkcs11_tool("nobody", srv.address, "-L")
        member = pkcs11_tool("www-data", srv.address, "-L")
        log = srv.stderr()
    assert outsider.returncode != 0 and "Slot 0" not in outsider.stdout, outsider.stdout
    assert "CKR_GENERAL_ERROR" in outsider.stdout + outsider.stderr
    reason = re.search(r"permission denied by ptkhsm serve: user nobody \(uid 65534\) is neither its owner root "
                       r"nor a member of its group www-data, and the HSM socket (\S+) \(mode 0660\)", outsider.stderr)
    assert reason and reason.group(1) == srv.address, outsider.stderr
    assert re.search(r"WARNING: refused connection from unix pid=\d+ uid=65534 user=nobody gid=65534: "
                     r"permission denied by ptkhsm serve", log), log
    assert not re.search(r"connection from unix \S+ uid=65534 .*\(worker", log), log  # no application made
    assert member.returncode == 0, member.stderr  # the group still gets in


def test_owner_item_and_bad_values(base, tmp_path):
    with server(base, tmp_path, ET_HSM_NETSERVER_SOCKET_OWNER="www-data", ET_HSM_NETSERVER_SOCKET_GROUP="0",
                ET_HSM_NETSERVER_SOCKET_MODE="600") as srv:
        st = os.stat(srv.address)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (WWW, 0, 0o600)
        owner = pkcs11_tool("www-data", srv.address, "-L")
    assert owner.returncode == 0, owner.stderr
    for name, kind in (("ET_HSM_NETSERVER_SOCKET_OWNER", "user"), ("ET_HSM_NETSERVER_SOCKET_GROUP", "group")):
        with pytest.raises(ConfigError, match=f"{name}='no-such-one': no such {kind}"):
            Config({name: "no-such-one", "HOME": "/nonexistent"}).get(name)
        assert Config({name: "", "HOME": "/nonexistent"}).get(name) is None


def test_a_file_that_is_not_a_socket_is_not_replaced(base, tmp_path):
    target = base / "run" / "hsm.sock"
    target.parent.mkdir()
    target.write_text("keep me")
    with pytest.raises(RuntimeError, match="exists and is not a socket"):
        server(base, tmp_path)
    assert target.read_text() == "keep me"
