"""The PostgreSQL store itself, against a real server: the interface, schema, errors."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ptkhsm.config import Config
from ptkhsm.constants import CKR_DEVICE_ERROR
from ptkhsm.errors import CKRError
from ptkhsm.hsm.store import open_location
from ptkhsm.hsm.store.postgres import PostgresStore

from pg.conftest import BIN, PASSWORD, dbname


def test_rows_round_trip_and_version(pg_uri):
    a, b = PostgresStore(pg_uri), PostgresStore(pg_uri)
    assert a.token(0) is None
    a.init_token(0, {"label": b"L" * 32, "so_salt": b"s", "so_sealed": b"x"})
    assert b.token(0)["label"] == b"L" * 32
    before = b.version()
    own = a.version()
    uids = a.insert(0, [(False, b"pub"), (True, b"sealed")])
    assert a.version() == own  # its own commit is already in its caller's tables
    assert b.objects(0, False) == [(uids[0], b"pub")]
    assert b.objects(0, True) == [(uids[1], b"sealed")]
    assert b.version() != before
    a.update(uids[0], False, b"pub2")
    a.delete(uids[1])
    assert b.objects(0, False) == [(uids[0], b"pub2")] and b.objects(0, True) == []
    a.close(), b.close()


def _config(**items):
    return Config({"HOME": "/nonexistent", **{k: str(v) for k, v in items.items()}})


def test_newer_schema_refused(pg_server, pg_uri):
    PostgresStore(pg_uri).close()
    pg_server.sql("UPDATE ptkhsm_meta SET value='2' WHERE key='schema'", dbname=dbname(pg_uri))
    with pytest.raises(CKRError) as err:
        PostgresStore(pg_uri)
    assert err.value.rv == CKR_DEVICE_ERROR
    assert "schema 2, this ptkhsm reads 1" in str(err.value)


def test_password_never_in_a_message(pg_server, pg_uri):
    wrong = pg_uri.replace(PASSWORD, "Wr0ng-Passw0rd-xyz")
    with pytest.raises(CKRError) as err:
        PostgresStore(wrong)
    message = str(err.value)
    assert "password authentication failed" in message and "Wr0ng-Passw0rd-xyz" not in message
    assert "dbname=ptkhsm_t" in message  # says which database
    # An unparsable string: libpq would quote the text after the password.
    with pytest.raises(CKRError) as err:
        PostgresStore(f"host={pg_server.dir} password={PASSWORD} {PASSWORD}-tail")
    assert PASSWORD not in str(err.value) and "not a valid libpq connection string" in str(err.value)
    # Connected, then a failing statement: the store's description has no password either.
    store = PostgresStore(pg_uri)
    assert PASSWORD not in store.path
    store.close()


def test_libpq_password_and_service_files(pg_server, pg_uri, tmp_path, monkeypatch):
    name = dbname(pg_uri)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:{name}:ptkhsm:{PASSWORD}\n")
    passfile.chmod(0o600)
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[ptkhsm-group]\nhost={pg_server.dir}\nport=5432\ndbname={name}\nuser=ptkhsm\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "absent"))
    with pytest.raises(CKRError, match="password"):  # without the password file, no way in
        PostgresStore("service=ptkhsm-group")
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    store = open_location("service=ptkhsm-group", _config())
    store.init_token(1, {"label": b"via service", "so_salt": b"s", "so_sealed": b"x"})
    assert store.token(1)["label"] == b"via service"
    assert store.path == "postgresql service=ptkhsm-group"
    store.close()


def _token(store, slot=0):
    store.init_token(slot, {"label": b"L", "so_salt": b"s", "so_sealed": b"x"})


def test_lock_wait_ends_in_device_error_within_the_time_out(pg_server, pg_uri):
    store = PostgresStore(pg_uri, statement_timeout=1)
    _token(store)
    holder = subprocess.Popen(["runuser", "-u", "postgres", "--", "env", "PGAPPNAME=holder",
                               str(BIN / "psql"), "-h",
                               str(pg_server.dir), "-U", "postgres", "-d", dbname(pg_uri), "-c",
                               "BEGIN; LOCK TABLE ptkhsm_objects; SELECT pg_sleep(30);"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        start = time.monotonic()
        with pytest.raises(CKRError) as err:
            store.insert(0, [(False, b"waits")])
        assert time.monotonic() - start < 3
        assert err.value.rv == CKR_DEVICE_ERROR and "timeout" in str(err.value)
    finally:
        pg_server.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name='holder'")
        holder.wait()
    assert store.insert(0, [(False, b"after")])  # the same store goes on
    assert [blob for _, blob in store.objects(0, False)] == [b"after"]
    store.close()


def _postgres_pids(server):
    pid = int((server.data / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid, *map(int, children)]


def test_frozen_server_ends_in_device_error_then_recovers(pg_server, pg_uri):
    store = PostgresStore(pg_uri, connect_timeout=1, statement_timeout=1)
    _token(store)
    pids = _postgres_pids(pg_server)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(CKRError) as err:
            store.insert(0, [(False, b"frozen")])
        elapsed = time.monotonic() - start
        assert err.value.rv == CKR_DEVICE_ERROR and elapsed < 10, (elapsed, str(err.value))
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    store.insert(0, [(False, b"thawed")])
    assert b"thawed" in [blob for _, blob in store.objects(0, False)]
    store.close()


def test_database_restart_recovered_without_reopening(pg_server, pg_uri):
    store, other = PostgresStore(pg_uri), PostgresStore(pg_uri)
    _token(store)
    store.insert(0, [(False, b"before")])
    seen = other.version()
    pg_server.stop("immediate")  # a crash: the WAL brings back every committed row
    with pytest.raises(CKRError) as err:
        store.insert(0, [(False, b"while down")])
    assert err.value.rv == CKR_DEVICE_ERROR and "connect" in str(err.value)
    pg_server.start()
    store.insert(0, [(False, b"after")])
    assert sorted(blob for _, blob in other.objects(0, False)) == [b"after", b"before"]
    assert other.version() != seen  # a reconnection may have missed notifications
    store.close(), other.close()


def test_connection_found_dead_is_replaced_before_the_call(pg_server, pg_uri):
    """A restart while the store is idle: its next change simply succeeds, once."""
    store = PostgresStore(pg_uri)
    _token(store)
    pg_server.stop("fast")
    pg_server.start()
    uids = store.insert(0, [(False, b"one")])
    assert [uid for uid, _ in store.objects(0, False)] == uids
    store.close()


def test_concurrent_first_opens_create_the_schema_once(pg_uri):
    errors = []

    def open_one():
        try:
            PostgresStore(pg_uri).close()
        except CKRError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_store_item_resolved_like_every_item(pg_uri, tmp_path):
    from ptkhsm.hsm.store import open_store
    from ptkhsm.hsm.store.db import Store
    conf = tmp_path / ".config" / "safenet"
    conf.mkdir(parents=True)
    (conf / "et_ptkc").write_text(f'ET_PTKC_SW_STORE="{pg_uri}"\nET_PTKC_SW_STORE_STATEMENT_TIMEOUT="3"\n')
    env = {"HOME": str(tmp_path), "ET_PTKC_SW_DATAPATH": str(tmp_path / "data")}
    store = open_store(Config(env))
    assert isinstance(store, PostgresStore) and "-c statement_timeout=3000" in store._params["options"]
    store.close()
    plain = open_store(Config({**env, "ET_PTKC_SW_STORE": ""}))  # the environment wins: sqlite
    assert isinstance(plain, Store) and plain.path == str(tmp_path / "data" / "ptkhsm.db")
    plain.close()


def test_version_asks_the_database_nothing(pg_server, pg_uri):
    store, other = PostgresStore(pg_uri), PostgresStore(pg_uri)
    _token(other)
    store.objects(0, False)  # the last statement this connection's backend ran
    seen = store.version()
    for _ in range(1000):
        store.version()
    last = pg_server.sql("SELECT query FROM pg_stat_activity WHERE application_name='ptkhsm' "
                         f"AND pid={store._own_pid}", dbname=dbname(pg_uri))
    assert last.startswith("SELECT uid, blob FROM ptkhsm_objects"), last
    other.insert(0, [(False, b"news")])
    deadline = time.monotonic() + 2
    while store.version() == seen and time.monotonic() < deadline:
        time.sleep(0.001)
    assert store.version() != seen  # the notification, read from the socket
    store.close(), other.close()


def test_without_psycopg_the_error_says_what_to_install(pg_uri):
    code = ("import sys; sys.modules['psycopg'] = None\n"  # as if the extra were not installed
            "from ptkhsm.hsm.store.postgres import PostgresStore\n"
            "from ptkhsm.errors import CKRError\n"
            f"try:\n    PostgresStore({pg_uri!r})\nexcept CKRError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "CKR_DEVICE_ERROR" in out and "pip install 'ptkhsm[postgresql]'" in out and PASSWORD not in out
