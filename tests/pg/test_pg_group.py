"""A group of HSMs (embedded modules in their own processes, each with its own data
directory) on one PostgreSQL database: one truth for all, exact under concurrent
writers, group-wide lock-out, and no acknowledged object lost across a restart."""

import subprocess
import sys
import time

import pytest

from conftest import MODULE, SO_PIN, init_token
from pg.members import LABEL, PEER, Member, acknowledged, eventually, guess_at_once, member_env, writer


@pytest.fixture
def group(pg_uri):
    init_token(member_env(pg_uri), label=LABEL)
    members = [Member(member_env(pg_uri)) for _ in range(3)]
    yield pg_uri, members
    for member in members:
        member.stop()


def test_each_member_sees_the_others_changes(group):
    pg_uri, (a, b, c) = group
    assert a.ask("find x") == b.ask("find x") == ""
    for i in range(5):
        assert a.ask(f"create x-a{i}") == "OK"
        eventually(b, "find x-a", ",".join(f"x-a{j}" for j in range(i + 1)))
    assert c.ask("create x-c") == "OK"
    for member in (a, b, c):
        eventually(member, "find x", "x-a0,x-a1,x-a2,x-a3,x-a4,x-c")


def test_init_token_on_one_is_seen_by_all(group):
    pg_uri, (a, b, c) = group
    a.ask("create before-init")
    env = member_env(pg_uri)
    subprocess.run(["pkcs11-tool", "--module", MODULE, "--slot", "0", "--init-token", "--label", "renamed",
                    "--so-pin", SO_PIN], check=True, capture_output=True, env=env)
    for member in (a, b, c):
        eventually(member, "label", "renamed")
        # the old token's sessions ended with it (PKCS#11), and its objects went with it
        assert member.ask("find before") == "SessionHandleInvalid"
        assert member.ask("reopen") == "OK" and member.ask("find before") == ""


def test_lock_out_is_group_wide(pg_uri):
    limit = 6
    init_token(member_env(pg_uri), label=LABEL)
    members = [Member(member_env(pg_uri, ET_PTKC_SW_MAX_LOGIN_FAILURES=str(limit))) for _ in range(3)]
    guess_at_once(members, limit)  # 18 wrong PINs tried in parallel on three HSMs
    for member in members:
        member.stop()


def _writers(pg_uri, count, per_writer):
    return [writer(member_env(pg_uri), f"w{i}", per_writer) for i in range(count)]


def test_concurrent_writers_exact_final_set(group):
    pg_uri, (a, _, _) = group
    acked, errors = acknowledged(_writers(pg_uri, 4, 60))
    assert not errors
    expected = sorted(f"w{i}-{j}" for i in range(4) for j in range(60))
    assert sorted(acked) == expected
    assert a.ask("find w").split(",") == expected


def test_restart_during_load_loses_no_acknowledged_object(pg_server, group):
    pg_uri, (a, b, _) = group
    writers = _writers(pg_uri, 4, 60)
    first = [proc.stdout.readline() for proc in writers]  # all four are writing
    pg_server.stop("immediate")
    time.sleep(1)
    pg_server.start()
    acked, errors = acknowledged(writers, first)
    assert errors, "the restart came too late to hit the writers"
    assert set(errors) == {"! DeviceError"}  # CKR_DEVICE_ERROR while the database was down
    found = set(b.ask("find w").split(","))  # members recover by themselves
    assert set(acked) <= found
    # A create that failed may still have committed (the COMMIT's reply was lost); at
    # most one such ghost per writer for each error it saw.
    assert len(found - set(acked)) <= len(errors)
    assert a.ask("create after-restart") == "OK" and b.ask("find after") == "after-restart"


def test_kill_9_mid_write_leaves_no_partial_object(group):
    pg_uri, (a, _, _) = group
    (proc,) = _writers(pg_uri, 1, 5000)
    acked = [proc.stdout.readline().strip() for _ in range(30)]
    proc.kill()
    proc.wait()
    found = a.ask("find w").split(",")  # every stored row decodes, or the find would fail
    assert set(acked) <= set(found) and all(label.startswith("w0-") for label in found)
    assert a.ask("create after-kill") == "OK"


def test_a_member_without_the_groups_storage_key_is_refused(group, tmp_path):
    """The first member records its storage key's check value; one with another key file
    (or none) cannot open the database, with a message naming the file."""
    pg_uri, _ = group
    stranger = member_env(pg_uri, ET_PTKC_SW_STORAGE_KEYFILE=str(tmp_path / "other.key"))
    proc = subprocess.run([sys.executable, PEER, MODULE, LABEL], env=stranger, text=True,
                          capture_output=True, timeout=60)
    assert proc.stdout != "ready\n" and "other.key is missing" in proc.stderr
