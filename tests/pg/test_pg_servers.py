"""A group of real `ptkhsm serve` servers, each with its own data directory, sharing only a
PostgreSQL database (and the group's storage key file). Clients are python-pkcs11 processes
over the real module, each pointed at one server (ET_HSM_NETCLIENT_SERVERLIST), or an HA
client pointed at two. They use the HSM's slot 1: slot 0 is ExtToken's, whose objects are
host-side files of each client, not rows of the shared store (docs/store-postgresql.md)."""

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import MODULE, SO_PIN, USER_PIN, init_token
from netserver import Server
from pg.members import LABEL, Member, acknowledged, eventually, guess_at_once, member_env, writer

SLOT = 1
HA_APP = Path(__file__).resolve().parent.parent / "network" / "ha_app.py"


def start_servers(pg_uri, count, **items):
    servers = []
    try:
        for _ in range(count):
            env = member_env(pg_uri, PTKHSM_LOG_LEVEL="WARNING", **items)
            servers.append(Server(tempfile.mkdtemp(prefix="ptkhsm-server-"), "tcp", env=env))
    except BaseException:
        stop(servers)
        raise
    return servers


def stop(servers):
    for server in servers:
        server.stop()


def client_env(*servers, **extra):
    """A client host: its own home and data directory (ExtToken's files), the servers' list."""
    env = {"PATH": "/usr/bin:/bin", "HOME": tempfile.mkdtemp(prefix="ptkhsm-home-"),
           "ET_PTKC_SW_DATAPATH": tempfile.mkdtemp(prefix="ptkhsm-client-"),
           "ET_HSM_NETCLIENT_SERVERLIST": " ".join(server.address for server in servers),
           "PTKHSM_PEER_SLOT": str(SLOT), "PTKHSM_LOG_LEVEL": "WARNING"}
    env.update(extra)
    return env


@pytest.fixture
def servers(pg_uri):
    started = start_servers(pg_uri, 3)
    try:
        init_token(client_env(started[0]), slot=SLOT, label=LABEL)
        yield started
    finally:
        stop(started)


@pytest.fixture
def clients(servers):
    """One client process per server."""
    members = [Member(client_env(server)) for server in servers]
    yield members
    for member in members:
        member.stop()


def test_each_server_sees_the_others_changes(clients):
    a, b, c = clients
    assert a.ask("find x") == b.ask("find x") == c.ask("find x") == ""
    assert a.ask("create x-a") == "OK"
    eventually(b, "find x", "x-a")
    assert c.ask("create x-c") == "OK"
    for member in clients:
        eventually(member, "find x", "x-a,x-c")


def test_lock_out_is_group_wide_across_servers(pg_uri):
    limit = 6
    servers = start_servers(pg_uri, 3, ET_PTKC_SW_MAX_LOGIN_FAILURES=str(limit))
    try:
        init_token(client_env(servers[0]), slot=SLOT, label=LABEL)
        members = [Member(client_env(server)) for server in servers]
        guess_at_once(members, limit)  # 18 wrong PINs through three servers at once
        for member in members:
            member.stop()
    finally:
        stop(servers)


def test_three_servers_four_writers_each_exact_final_set(servers, clients):
    writers = [writer(client_env(server), f"s{i}w{j}", 15) for i, server in enumerate(servers) for j in range(4)]
    acked, errors = acknowledged(writers)
    assert not errors
    expected = sorted(f"s{i}w{j}-{k}" for i in range(3) for j in range(4) for k in range(15))
    assert sorted(acked) == expected
    for member in clients:
        eventually(member, "find s", ",".join(expected))


def test_database_restart_under_load_loses_no_acknowledged_object(pg_server, servers, clients):
    writers = [writer(client_env(server), f"s{i}w{j}", 40) for i, server in enumerate(servers) for j in range(2)]
    first = [proc.stdout.readline() for proc in writers]  # all six are writing
    pg_server.stop("immediate")
    time.sleep(1)
    pg_server.start()
    acked, errors = acknowledged(writers, first)
    assert errors, "the restart came too late to hit the writers"
    assert set(errors) == {"! DeviceError"}  # CKR_DEVICE_ERROR from the servers while the database was down
    assert all(server.alive() for server in servers)  # nobody restarted them
    for member in clients:
        found = finds_all(member, "find s", set(acked))
        # a create whose COMMIT's reply was lost may have committed: at most one such per error
        assert len(found - set(acked)) <= len(errors)
    for i, member in enumerate(clients):
        assert member.ask(f"create after-{i}") == "OK"
    for member in clients:
        eventually(member, "find after", "after-0,after-1,after-2")


def finds_all(member, line, wanted, within=2.0):
    """The labels the member's find lists once they include `wanted` (notifications of the
    last commits may still be on their way), failing after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        found = set(member.ask(line).split(","))
        if wanted <= found or time.monotonic() > deadline:
            assert wanted <= found, f"missing after {within} s: {sorted(wanted - found)}"
            return found
        time.sleep(0.01)


def test_ha_client_fails_over_between_servers_sharing_only_the_database(pg_uri):
    """ha_app.py (a logged-in application mid-way through a find and two multi-part
    operations) carries on when its server gets kill -9: the other server has no
    directory in common with it, only the database."""
    servers = start_servers(pg_uri, 2)
    try:
        env = client_env(*servers, PKCS11_MODULE=MODULE, PKCS11_TOKEN_LABEL="ha-pg", PKCS11_TOKEN_PIN=USER_PIN)
        init_token(client_env(servers[0]), slot=SLOT, label="ha-pg")
        env.update(ET_PTKC_GENERAL_LIBRARY_MODE="HA", ET_PTKC_HA_RECOVER_DELAY="0")
        app = subprocess.Popen([sys.executable, str(HA_APP)], env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert app.stdout.readline().strip() == "ready", app.stderr.read()
            for round_number in (1, 2):
                assert app.stdout.readline().strip() == "kill"
                if round_number == 1:
                    servers[0].stop(signal.SIGKILL)  # round 2 runs on the second server alone
                app.stdin.write("go\n")
                app.stdin.flush()
                line = app.stdout.readline().strip()
                assert line == f"round {round_number} ok", line + app.stderr.read()
            app.stdin.close()
            assert app.wait(timeout=60) == 0, app.stderr.read()
            assert "fail-over" in app.stderr.read()
        finally:
            app.kill()
            app.wait()
        # what the application made through the first server is the second's too
        listed = subprocess.run(["pkcs11-tool", "--module", MODULE, "--slot", str(SLOT), "--login", "--pin",
                                 USER_PIN, "--list-objects"], env=client_env(servers[1]), capture_output=True,
                                text=True, timeout=60)
        assert "label:      ha-key" in listed.stdout, listed.stdout + listed.stderr
    finally:
        stop(servers)



def test_re_initialised_token_ends_the_other_servers_sessions(servers):
    """C_InitToken through one server (which has no session open: CKR_SESSION_EXISTS
    otherwise): a user logged in through another loses that login and its sessions
    (PKCS#11: the token's sessions end), never keeps the old data key."""
    a, b = Member(client_env(servers[0])), Member(client_env(servers[1]))
    assert a.ask(f"user {USER_PIN}") == "OK" and a.ask("user-create secret-old") == "OK"
    assert a.ask("user-find secret") == "secret-old"
    init_env = client_env(servers[2])
    subprocess.run(["pkcs11-tool", "--module", MODULE, "--slot", str(SLOT), "--init-token", "--label", LABEL,
                    "--so-pin", SO_PIN], check=True, capture_output=True, env=init_env)
    new_pin = "5678"
    subprocess.run(["pkcs11-tool", "--module", MODULE, "--slot", str(SLOT), "--init-pin", "--login",
                    "--so-pin", SO_PIN, "--pin", new_pin], check=True, capture_output=True, env=init_env)
    assert b.ask(f"user {new_pin}") == "OK" and b.ask("user-create secret-new") == "OK"
    eventually(a, "user-find secret", "SessionHandleInvalid")
    assert a.ask("find secret") == "SessionHandleInvalid"  # every session of the token, not only the user's
    assert a.ask(f"user {USER_PIN}") == "PinIncorrect"      # the old PIN is gone with the old token
    assert a.ask(f"user {new_pin}") == "OK" and a.ask("user-find secret") == "secret-new"
    a.stop()
    b.stop()
