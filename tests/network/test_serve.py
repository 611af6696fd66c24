"""`ptkhsm serve` with real clients over TCP and a unix socket: python-pkcs11's
own suite, pkcs11-tool --test, two applications on one server, a clean stop."""

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MODULE, ROOT, SO_PIN, USER_PIN, init_token
from netserver import TRANSPORTS, Server

SUITE = ROOT / ".cache" / "python-pkcs11-0.10.1-tests"
CLIENT = Path(__file__).resolve().parent / "client_app.py"


@pytest.fixture(params=TRANSPORTS)
def server(request, tmp_path):
    with Server(tmp_path / "data", request.param) as server:
        yield server


def test_upstream_suite_and_pkcs11_tool_over_the_server(server):
    env = server.env(PKCS11_MODULE=MODULE, PKCS11_TOKEN_LABEL="upstream", PKCS11_TOKEN_PIN=USER_PIN,
                     PKCS11_TOKEN_SO_PIN=SO_PIN)
    init_token(env, label="upstream")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                            cwd=SUITE, env=env, capture_output=True, text=True, timeout=600)
    summary = result.stdout.strip().splitlines()[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary)}
    assert counts.get("failed", 0) == 0 and not counts.get("errors", counts.get("error", 0)), result.stdout[-5000:]
    assert counts.get("passed", 0) >= 140, summary
    tool = subprocess.run(["pkcs11-tool", "--module", MODULE, "--token-label", "upstream", "--test", "--login",
                           "--pin", USER_PIN], env=env, capture_output=True, text=True, timeout=300)
    assert tool.returncode == 0 and "No errors" in tool.stdout, tool.stdout[-3000:] + tool.stderr[-2000:]
    assert server.alive()


class App:
    """One client process: one application of the server."""

    def __init__(self, env):
        self.proc = subprocess.Popen([sys.executable, str(CLIENT)], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def __call__(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def quit(self):
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


def test_two_applications_on_one_server(server):
    env = server.env(PKCS11_MODULE=MODULE, PKCS11_TOKEN_LABEL="apps")
    init_token(env, label="apps")
    a, b = App(env), App(env)
    try:
        assert a(f"open {USER_PIN}") == "ok"
        assert a("session-object a-only") == "ok"
        assert a("private-object a-private") == "ok"
        assert a("find a-only") == "ok 1"
        assert b("open") == "ok"
        assert b("find a-only") == "ok 0"       # a's session object is a's
        assert b("find a-private") == "ok 0"    # b is not logged in
        assert b("close") == "ok"
        assert b(f"open {USER_PIN}") == "ok"
        assert b("find a-private") == "ok 1"
        assert b("close") == "ok"               # b logs out and closes its last session
        assert a("find a-private") == "ok 1"    # a is still logged in
        assert a("find a-only") == "ok 1"
        b.quit()                                # b's connection ends: nothing of a's goes
        assert a("find a-only") == "ok 1"
        assert a("private-object a-second") == "ok"
    finally:
        for app in (a, b):
            if app.proc.poll() is None:
                app.proc.kill()
                app.proc.wait()


def test_sigterm_stops_cleanly_and_keeps_acknowledged_objects(tmp_path):
    env_data = tmp_path / "data"
    server = Server(env_data, "tcp", workers=2)
    env = server.env(PKCS11_MODULE=MODULE, PKCS11_TOKEN_LABEL="stop")
    init_token(env, label="stop")
    app = App(env)
    assert app(f"open {USER_PIN}") == "ok"
    assert app("private-object kept") == "ok"
    assert server.stop(signal.SIGTERM) == 0
    assert "Traceback" not in server.stderr()
    app.proc.kill()
    app.proc.wait()
    with Server(env_data, "unix") as again:
        app = App(again.env(PKCS11_MODULE=MODULE, PKCS11_TOKEN_LABEL="stop"))
        assert app(f"open {USER_PIN}") == "ok"
        assert app("find kept") == "ok 1"
        app.quit()


def _dead_port():
    import socket
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nobody listens there now
    return port


@pytest.mark.parametrize("exttoken", [False, True], ids=["hsm-token", "exttoken"])
def test_server_list_fails_over_for_initialize_and_new_sessions(tmp_path, exttoken):
    """Without HA: C_Initialize takes the first server that answers; the sessions of a
    lost server answer CKR_DEVICE_REMOVED; new sessions go to the next server. With
    ExtToken, the private token object is in its files and is found from the new server
    (the layer's loader session was on the lost server: it opens another, reloads)."""
    data = tmp_path / "data"
    with Server(data, "tcp") as first, Server(data, "unix") as second:
        env = first.env(PKCS11_MODULE=MODULE, PKCS11_TOKEN_LABEL="fail-over",
                        ET_PTKC_EXTTOKEN_ENABLE="1" if exttoken else "0",
                        ET_PTKC_EXTTOKEN_PATH=str(tmp_path / "exttoken"))
        init_token(env, label="fail-over")
        env["ET_HSM_NETCLIENT_SERVERLIST"] = f"127.0.0.1:{_dead_port()} {first.address} {second.address}"
        app = App(env)
        try:
            assert app(f"open {USER_PIN}") == "ok"
            assert app("private-object both-see-it") == "ok"
            assert app("read both-see-it") == "ok v"        # ExtToken: a copy loaded into the HSM
            first.stop(signal.SIGKILL)
            assert app("find both-see-it") == "err DeviceRemoved"
            assert app(f"open {USER_PIN}") == "ok"        # the next server of the list
            assert app("find both-see-it") == "ok 1"
            assert app("read both-see-it") == "ok v"
        finally:
            app.proc.kill()
            app.proc.wait()
