"""HA mode: a logged-in python-pkcs11 program mid-way through a find and two
multi-part operations carries on without an error when its server gets
`kill -9`, and again when the other one does after the first is back."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MODULE, USER_PIN, init_token
from netserver import Server

HA_APP = Path(__file__).resolve().parent / "ha_app.py"


@pytest.mark.parametrize("exttoken", [False, True], ids=["hsm-token", "exttoken"])
def test_sessions_survive_kill_9_of_their_server(tmp_path, exttoken):
    data = tmp_path / "data"
    paths = [tmp_path / "a.sock", tmp_path / "b.sock"]
    servers = [Server(data, "unix", socket_path=paths[0]), Server(data, "unix", socket_path=paths[1])]
    try:
        # exttoken: slot 0's token objects (the AES key, the token objects found) are ExtToken's,
        # in files on the client's host; the HSM holds their loaded copies as session objects
        # of ExtToken's loader session, which a recovery must make again (C_UnwrapKey replayed).
        env = servers[0].env(PKCS11_MODULE=MODULE, PKCS11_TOKEN_LABEL="ha", PKCS11_TOKEN_PIN=USER_PIN,
                             ET_PTKC_EXTTOKEN_ENABLE="1" if exttoken else "0",
                             ET_PTKC_EXTTOKEN_PATH=str(tmp_path / "exttoken"))
        init_token(env, label="ha")
        env.update(ET_HSM_NETCLIENT_SERVERLIST=f"{paths[0]} {paths[1]}", ET_PTKC_GENERAL_LIBRARY_MODE="HA",
                   PTKHSM_LOG_LEVEL="WARNING")
        # ET_PTKC_HA_RECOVER_DELAY stays at its default (a minute): in round 2 the restarted
        # server is still within it, and is tried because no other server answers.
        app = subprocess.Popen([sys.executable, str(HA_APP)], env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert app.stdout.readline().strip() == "ready", app.stderr.read()
        for round_number, victim in ((1, 0), (2, 1)):
            assert app.stdout.readline().strip() == "kill"
            servers[victim].stop(signal.SIGKILL)
            if round_number == 1:
                servers[0] = Server(data, "unix", socket_path=paths[0])  # back before the second loss
            app.stdin.write("go\n")
            app.stdin.flush()
            line = app.stdout.readline().strip()
            assert line == f"round {round_number} ok", line + app.stderr.read()
        app.stdin.close()
        assert app.wait(timeout=60) == 0, app.stderr.read()
        assert app.stderr.read().count("fail-over") == 2
        if exttoken:  # the key and the token objects found were ExtToken's, in its files
            assert any(p.stat().st_size > 1000 for p in (tmp_path / "exttoken").glob("*.private.ods"))
    finally:
        for server in servers:
            server.stop(signal.SIGKILL)
