"""nginx whose workers run as www-data, with the key in `ptkhsm serve`'s store.

Root starts `ptkhsm serve --unix` on a data directory of its own (0700 root)
with the socket's group www-data and mode 0660 (ET_HSM_NETSERVER_SOCKET_GROUP,
_MODE). The token, its key pairs and nginx reach the HSM only through the
socket (ET_HSM_NETCLIENT_SERVERLIST; no ET_PTKC_SW_DATAPATH, ExtToken off so
that no key lives on the client's side). nginx's master (root) loads the key
and forks two workers as www-data (`user www-data;`); each initialises the
module again and signs every handshake through its own connection, which the
server logs with the worker's pid and uid (SO_PEERCRED). The store stays 0700
root and unreadable by www-data; nobody, outside the socket's group, is
refused at C_Initialize with an error naming the socket. The handshake rate
through the socket goes to build/conformance/nginx-handshakes.json beside
test_nginx.py's figures.

The machine's Python is under /root (0700): nginx and the other users'
programs run with a view of it (tests/asuser.py), as a system-wide Python
would be. SoftHSMv2 has no server: its workers would have to read the token
directory itself, which is what this scenario forbids (not-supported).
"""

import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from . import harness
from .harness import not_supported
from .test_nginx import HANDSHAKES, KEYS, RATE_SECONDS, Nginx, _record, children, client_context, get

from asuser import as_user, python_view  # noqa: E402  (tests/, on the path by harness)
from netserver import Server  # noqa: E402

CLIENT = "nginx"
USER = "www-data"
OUTSIDER = "nobody"


def uid_of(pid):
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # gone
        return None
    return int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))


@pytest.fixture(scope="module")
def served(token, tmp_path_factory):
    """(nginx set up for www-data, the server, the store) for ptkhsm; None for the control."""
    if token.module.control or os.geteuid() != 0:
        yield None
        return
    base = Path(tempfile.mkdtemp(prefix="ptkhsm-nginx-"))
    base.chmod(0o755)  # every user may enter; the server creates run/ and the socket in it
    tok = harness.Token(token.module, tmp_path_factory.mktemp("nginx-www-data"))
    store = Path(tok.env.pop("ET_PTKC_SW_DATAPATH"))
    server = Server(store, "unix", env=dict(tok.env, ET_HSM_NETSERVER_SOCKET_GROUP=USER,
                                            ET_HSM_NETSERVER_SOCKET_MODE="660", PTKHSM_LOG_LEVEL="INFO"),
                    socket_path=base / "run" / "hsm.sock", workers=2)
    try:
        tok.env.update(ET_HSM_NETCLIENT_SERVERLIST=server.address, ET_PTKC_EXTTOKEN_ENABLE="0")
        tok.initialise()
        nginx = Nginx(tok)
        nginx.user = USER
        nginx.environment = ["ET_HSM_NETCLIENT_SERVERLIST", "ET_PTKC_EXTTOKEN_ENABLE", "OPENSSL_CONF"]
        nginx.prefix = python_view(USER)
        # the module's Python keeps the master's environment in the workers (nginx clears only
        # the C one): HOME must be one www-data may read (its configuration files)
        nginx.env["HOME"] = pwd.getpwnam(USER).pw_dir
        yield nginx, server, store
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("kind", list(KEYS))
def test_www_data_workers(token, served, kind):
    """workers as www-data sign 40 handshakes through ptkhsm serve's socket (group www-data, 0660); store 0700 root; nobody refused"""
    if token.module.control:
        not_supported("no server: the workers would need to read the token directory")
    if served is None:
        pytest.fail("needs root: nginx's master switches its workers to www-data")
    nginx, server, store = served
    key, cert = nginx.token_key(kind)
    with nginx.serving(key, cert) as (process, port):
        master = process.process.pid
        deadline = time.monotonic() + 30
        # a new worker is root until nginx's worker initialisation switches it to www-data
        while (len(children(master)) < 2 or {uid_of(pid) for pid in children(master)} != {33}) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = children(master)
        assert len(workers) == 2, process.report()
        assert {uid_of(pid) for pid in workers} == {33}, "the workers are not www-data"
        context = client_context(nginx.ca.pem)
        answered = [get(context, port) for _ in range(HANDSHAKES)]
        assert set(answered) == workers, f"{set(answered)} of the workers {workers} answered"
        assert children(master) == workers, "a worker died: " + process.report()
        count, start = 0, time.monotonic()  # the rate through the socket, beside test_nginx.py's figures
        while time.monotonic() - start < RATE_SECONDS:
            get(context, port)
            count += 1
        _record("ptkhsm serve (www-data workers)", kind, {"token key": round(count / (time.monotonic() - start), 1)})
    log = server.stderr()
    served_pids = {int(pid) for pid in re.findall(r"connection from unix pid=(\d+) uid=33 user=www-data gid=33 "
                                                  r"\(worker", log)}
    assert workers <= served_pids, f"the server did not log both workers {workers}:\n{log[-3000:]}"

    st = os.stat(store)
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, 0), "the data directory is no longer 0700 root"
    peek = subprocess.run(python_view(USER) + as_user(USER) + ["ls", str(store)], capture_output=True, text=True)
    assert peek.returncode != 0 and "Permission denied" in peek.stderr, "www-data can read the data directory"

    outsider = subprocess.run(python_view(OUTSIDER) + as_user(OUTSIDER) +
                              ["pkcs11-tool", "--module", nginx.token.module.path, "-O"],
                              env={"PATH": os.environ["PATH"], "ET_HSM_NETCLIENT_SERVERLIST": server.address,
                                   "ET_PTKC_EXTTOKEN_ENABLE": "0"},
                              capture_output=True, text=True, timeout=120)
    assert outsider.returncode != 0 and "CKR_GENERAL_ERROR" in outsider.stdout + outsider.stderr, outsider.stdout
    assert f"cannot reach the HSM at {server.address}: [Errno 13] Permission denied" in outsider.stderr, \
        outsider.stderr
    assert "Private Key" not in outsider.stdout
