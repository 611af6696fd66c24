"""The HSM's persistent store in a PostgreSQL database, shared by a group of HSMs.

The same narrow interface as the sqlite `Store` (db.py): token rows, object
rows opaque to this module, a change version. Every change is one transaction
committed before the call returns (a single statement is its own transaction:
one round trip). Triggers notify the channel `ptkhsm_changes` in the changing
transaction, whoever writes. `version()` asks no query: it reads the
notifications already on the connection's socket (a non-blocking read), so a
find costs no round trip while the other HSMs' commits are seen as soon as
they arrive; our own commits are not counted (the caller's tables have them).

Faults: libpq's connect_timeout bounds connecting, the server's
statement_timeout/lock_timeout bound every statement and lock wait, TCP
keepalives and tcp_user_timeout bound a vanished peer over TCP, and a watchdog
thread shuts the socket of a call that outlives them all (a frozen server,
a unix socket): every fault ends in CKR_DEVICE_ERROR with the reason. A
connection found dead before a call (a restarted server) is replaced first;
one lost during a call is replaced and the call retried once if that cannot
apply a change twice (reads, idempotent writes, a transaction lost before its
COMMIT); otherwise the call fails with CKR_DEVICE_ERROR, "outcome unknown".
After any reconnection the version changes, since notifications may have been
missed.

The connection string may hold a password: it is never part of a message.
"""

import contextlib
import os
import select
import socket
import threading
import time
import weakref

from ...constants import CKR_DEVICE_ERROR, CKR_DEVICE_MEMORY
from ...errors import CKRError
from . import files
from .db import FAILURE_COLUMNS, TOKEN_FIELDS

try:
    import psycopg
    from psycopg import conninfo as _conninfo
except ImportError:  # the optional extra ptkhsm[postgresql]
    psycopg = None

SCHEMA_VERSION = 1
CHANNEL = "ptkhsm_changes"
_SCHEMA_LOCK = 0x70746B68  # advisory lock serialising schema creation ("ptkh")
WATCHDOG_GRACE = 2.0  # seconds past statement_timeout before the watchdog cuts the connection

_DDL = [
    "CREATE TABLE ptkhsm_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE ptkhsm_tokens (
        slot INTEGER PRIMARY KEY,
        label BYTEA NOT NULL,
        so_salt BYTEA, so_sealed BYTEA,
        user_salt BYTEA, user_sealed BYTEA,
        so_failures INTEGER NOT NULL DEFAULT 0,
        user_failures INTEGER NOT NULL DEFAULT 0,
        generation BYTEA)""",
    """CREATE TABLE ptkhsm_objects (
        uid BIGSERIAL PRIMARY KEY,
        slot INTEGER NOT NULL,
        private BOOLEAN NOT NULL,
        blob BYTEA NOT NULL)""",
    "CREATE INDEX ptkhsm_objects_slot ON ptkhsm_objects(slot, private)",
    f"""CREATE FUNCTION ptkhsm_notify() RETURNS trigger LANGUAGE plpgsql AS
        $$BEGIN PERFORM pg_notify('{CHANNEL}', ''); RETURN NULL; END$$""",
    *(f"""CREATE TRIGGER {table}_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
          FOR EACH STATEMENT EXECUTE FUNCTION ptkhsm_notify()""" for table in ("ptkhsm_tokens", "ptkhsm_objects")),
]

# How a call may be run: in a transaction (BEGIN ... COMMIT) or as one autocommitted
# statement; and whether running it twice is harmless, so that a call whose
# connection was lost mid-way can be retried.
READ = (False, True)          # reads: any number of statements, each its own snapshot
ONE_IDEMPOTENT = (False, True)
ONE_ONCE = (False, False)     # one statement that must not be applied twice
TRANSACTION = (True, False)   # retried only if lost before COMMIT
SNAPSHOT = (True, True)       # a read-only transaction


# The database's errors that mean "the token is full"; every other is CKR_DEVICE_ERROR.
_RV_OF_SQLSTATE = {"53100": CKR_DEVICE_MEMORY,   # disk_full
                   "53200": CKR_DEVICE_MEMORY,   # out_of_memory
                   "54000": CKR_DEVICE_MEMORY}   # program_limit_exceeded (a row too large)


class _Broken(Exception):
    """The connection was lost; `applied_maybe`: the change may have been committed."""

    def __init__(self, exc, applied_maybe):
        super().__init__()
        self.exc, self.applied_maybe = exc, applied_maybe


class PostgresStore:
    notifies = True  # version() reads notifications already received: no query

    def __init__(self, conninfo, connect_timeout=5, statement_timeout=10, key_path=None):
        """key_path: the storage key file (every member of a group needs the same one);
        None opens the rows only, for tests of the store itself."""
        if psycopg is None:
            raise CKRError(CKR_DEVICE_ERROR, "ET_PTKC_SW_STORE names a PostgreSQL database but psycopg "
                                             "is not installed: pip install 'ptkhsm[postgresql]'")
        try:
            params = _conninfo.conninfo_to_dict(conninfo)
        except psycopg.Error:
            # libpq's message quotes the text it could not parse, which may be the password.
            raise CKRError(CKR_DEVICE_ERROR, "ET_PTKC_SW_STORE is not a valid libpq connection "
                                             "string or postgresql:// URI") from None
        self._secret = params.get("password") or None
        self.path = describe(params)
        self._params = {**_session_params(connect_timeout, statement_timeout, params.get("options")),
                        **{k: v for k, v in params.items() if k != "options"}}
        self._params.setdefault("connect_timeout", str(connect_timeout))
        self._lock = threading.RLock()
        self._closed = False
        self._deadline = None  # monotonic time after which the call in progress is cut off
        self._patience = connect_timeout + statement_timeout + WATCHDOG_GRACE
        threading.Thread(target=self._watch, args=(weakref.ref(self),), name="ptkhsm-store-watchdog",
                         daemon=True).start()
        self._conn = None
        self._own_pid = None
        self._version = 0
        self.key_path, self.storage_key = key_path, None
        self._run("open", self._check_schema)
        if key_path is not None:
            self._run("open the storage key", self._open_storage_key, TRANSACTION)

    def _open_storage_key(self, conn):
        """The first member records its key's check value; every other must hold the same key."""
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        row = conn.execute("SELECT value FROM ptkhsm_meta WHERE key='storage_check'").fetchone()
        self.storage_key, new_check = files.storage_key(self.key_path, bytes.fromhex(row[0]) if row else None,
                                                        self.path)
        if new_check is not None:
            conn.execute("INSERT INTO ptkhsm_meta VALUES ('storage_check', %s)", (new_check.hex(),))

    # -- connection ----------------------------------------------------------
    def _error(self, what, exc):
        reason = str(exc).strip() or type(exc).__name__
        if self._secret:
            reason = reason.replace(self._secret, "***")
        rv = _RV_OF_SQLSTATE.get(getattr(exc, "sqlstate", None), CKR_DEVICE_ERROR)
        return CKRError(rv, f"store {self.path}: {what}: {reason}")

    def _connect(self):
        conn = None
        try:
            conn = psycopg.connect(**self._params, autocommit=True)
            conn.add_notify_handler(self._notified)
            conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            if conn is not None:
                conn.close()
            raise self._error("connect", exc) from None
        self._conn, self._own_pid = conn, conn.pgconn.backend_pid
        self._readable = select.poll()
        self._readable.register(conn.pgconn.socket, select.POLLIN)
        self._version += 1  # notifications may have been missed while disconnected

    def _drop(self):
        conn, self._conn = self._conn, None
        self._version += 1
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _notified(self, notify):
        if notify.pid != self._own_pid:  # our own changes are already in the caller's tables
            self._version += 1

    def _poll(self):
        """Read what waits on the socket (notifications, or the end of a connection the
        server closed) without blocking; drop a dead connection."""
        if self._conn is None:
            return
        pgconn = self._conn.pgconn
        for _ in range(16):  # a bound: notifications arriving faster than we read them
            if not self._readable.poll(0):
                return
            try:
                pgconn.consume_input()
            except psycopg.Error:
                self._drop()
                return
            while (pgn := pgconn.notifies()) is not None:
                if pgn.be_pid != self._own_pid:
                    self._version += 1

    @staticmethod
    def _watch(ref):
        """Cut the connection of a call past its deadline, so that its wait ends in an error.
        Holds the store weakly: a store dropped without close() (C_Finalize) ends its watchdog."""
        while True:
            time.sleep(0.25)
            store = ref()
            if store is None or store._closed:
                return
            deadline, conn = store._deadline, store._conn
            del store
            if deadline is not None and conn is not None and time.monotonic() > deadline:
                with contextlib.suppress(OSError, psycopg.Error):
                    # A duplicate descriptor: shutting it down ends libpq's wait on the
                    # shared socket, closing it leaves libpq's descriptor to libpq.
                    with socket.socket(fileno=os.dup(conn.pgconn.socket)) as cut:
                        cut.shutdown(socket.SHUT_RDWR)
            del conn

    def _run(self, what, work, how=READ):
        """work(conn) on a live connection, run as `how` says (READ, ONE_*, TRANSACTION, SNAPSHOT)."""
        with self._lock:
            for attempt in (1, 2):
                self._poll()
                if self._conn is None:
                    self._connect()
                self._deadline = time.monotonic() + self._patience
                try:
                    return self._attempt(self._conn, work, *how)
                except _Broken as broken:
                    self._drop()
                    if broken.applied_maybe:
                        raise self._error(f"{what}: connection lost, outcome unknown", broken.exc) from None
                    if attempt == 2:
                        raise self._error(what, broken.exc) from None
                except psycopg.Error as exc:
                    raise self._error(what, exc) from None
                finally:
                    self._deadline = None

    def _attempt(self, conn, work, transaction, repeatable):
        maybe = not repeatable and not transaction  # a lost ONE_ONCE statement may have committed
        try:
            if not transaction:
                return work(conn)
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if repeatable else "BEGIN")
            try:
                result = work(conn)
            except BaseException:
                if not conn.broken:
                    conn.execute("ROLLBACK")
                raise
            maybe = not repeatable
            conn.execute("COMMIT")
            return result
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                raise _Broken(exc, maybe) from None
            raise

    def _check_schema(self, conn):
        """Create the schema if there is none (once, under a lock: members may start
        together), else refuse a version this code does not read."""
        try:
            row = conn.execute("SELECT value FROM ptkhsm_meta WHERE key='schema'").fetchone()
        except psycopg.errors.UndefinedTable:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                if conn.execute("SELECT to_regclass('ptkhsm_meta')").fetchone()[0] is None:
                    for statement in _DDL:
                        conn.execute(statement)
                    conn.execute("INSERT INTO ptkhsm_meta VALUES ('schema', %s)", (str(SCHEMA_VERSION),))
                row = conn.execute("SELECT value FROM ptkhsm_meta WHERE key='schema'").fetchone()
        if row is None or row[0] != str(SCHEMA_VERSION):
            raise CKRError(CKR_DEVICE_ERROR, f"store {self.path}: schema {row[0] if row else 'unknown'}, "
                                             f"this ptkhsm reads {SCHEMA_VERSION}")
        if conn.execute("SELECT 1 FROM information_schema.columns WHERE table_name='ptkhsm_tokens' "
                        "AND column_name='generation' AND table_schema=current_schema()").fetchone() is None:
            # a database made before the column (additive: older members ignore it)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute("ALTER TABLE ptkhsm_tokens ADD COLUMN IF NOT EXISTS generation BYTEA")

    # -- the store interface -------------------------------------------------
    def version(self):
        """Changes when another HSM (connection) commits, or after a reconnection."""
        with self._lock:
            self._poll()
            return self._version

    def token(self, slot):
        row = self._run("read token", lambda c: c.execute(
            f"SELECT {', '.join(TOKEN_FIELDS)} FROM ptkhsm_tokens WHERE slot=%s", (slot,)).fetchone())
        return dict(zip(TOKEN_FIELDS, row)) if row else None

    def update_token(self, slot, **fields):
        assignments = ", ".join(f"{name}=%s" for name in fields)
        self._run("write token", lambda c: c.execute(
            f"UPDATE ptkhsm_tokens SET {assignments} WHERE slot=%s", (*fields.values(), slot)), ONE_IDEMPOTENT)

    def use_attempt(self, slot, who, limit):
        """Count a PIN attempt before it is checked -> the new count, or None if the
        count has reached limit. One UPDATE: the row lock makes parallel guessers,
        on any HSM of the group, each use one attempt."""
        column = FAILURE_COLUMNS[who]
        row = self._run("count PIN attempt", lambda c: c.execute(
            f"UPDATE ptkhsm_tokens SET {column}={column}+1 WHERE slot=%s AND {column}<%s "
            f"RETURNING {column}", (slot, limit)).fetchone(), ONE_ONCE)
        return row[0] if row else None

    def init_token(self, slot, fields):
        """Destroy the token's objects and write its new row, all or nothing."""
        names = ", ".join(fields)
        marks = ", ".join("%s" for _ in fields)

        def work(c):
            # Two HSMs initialising one slot at once: the second waits, then replaces
            # the first's token (its DELETEs see the first's committed rows).
            c.execute("SELECT pg_advisory_xact_lock(%s::int, %s::int)", (_SCHEMA_LOCK, slot))
            c.execute("DELETE FROM ptkhsm_objects WHERE slot=%s", (slot,))
            c.execute("DELETE FROM ptkhsm_tokens WHERE slot=%s", (slot,))
            c.execute(f"INSERT INTO ptkhsm_tokens (slot, {names}) VALUES (%s, {marks})", (slot, *fields.values()))
        self._run("initialise token", work, TRANSACTION)

    def objects(self, slot, private):
        return self._run("read objects", lambda c: c.execute(
            "SELECT uid, blob FROM ptkhsm_objects WHERE slot=%s AND private=%s", (slot, bool(private))).fetchall())

    def insert(self, slot, rows):
        """rows: [(private, blob)] stored in one transaction -> their uids."""
        def work(c):
            return [c.execute("INSERT INTO ptkhsm_objects (slot, private, blob) VALUES (%s, %s, %s) RETURNING uid",
                              (slot, bool(private), blob)).fetchone()[0] for private, blob in rows]
        return self._run("store object", work, ONE_ONCE if len(rows) == 1 else TRANSACTION)

    def update(self, uid, private, blob):
        self._run("update object", lambda c: c.execute(
            "UPDATE ptkhsm_objects SET private=%s, blob=%s WHERE uid=%s", (bool(private), blob, uid)), ONE_IDEMPOTENT)

    def delete(self, uid):
        self._run("delete object", lambda c: c.execute("DELETE FROM ptkhsm_objects WHERE uid=%s", (uid,)),
                  ONE_IDEMPOTENT)

    # -- whole-store copy (ptkhsm store copy) --------------------------------
    def contents(self):
        """-> (token rows {slot: fields}, object rows [(uid, slot, private, blob)]), one snapshot."""
        def work(c):
            tokens = {row[0]: dict(zip(TOKEN_FIELDS, row[1:])) for row in c.execute(
                f"SELECT slot, {', '.join(TOKEN_FIELDS)} FROM ptkhsm_tokens ORDER BY slot")}
            objects = c.execute("SELECT uid, slot, private, blob FROM ptkhsm_objects ORDER BY uid").fetchall()
            return tokens, objects
        return self._run("read store", work, SNAPSHOT)

    def replace_contents(self, tokens, objects):
        """Make the store hold exactly these rows (uids kept), all or nothing."""
        def work(c):
            c.execute("LOCK TABLE ptkhsm_tokens, ptkhsm_objects")
            c.execute("DELETE FROM ptkhsm_objects")
            c.execute("DELETE FROM ptkhsm_tokens")
            with c.cursor() as cur:
                cur.executemany(f"INSERT INTO ptkhsm_tokens (slot, {', '.join(TOKEN_FIELDS)}) "
                                f"VALUES (%s{', %s' * len(TOKEN_FIELDS)})",
                                [(slot, *(fields[name] for name in TOKEN_FIELDS)) for slot, fields in tokens.items()])
                cur.executemany("INSERT INTO ptkhsm_objects (uid, slot, private, blob) VALUES (%s, %s, %s, %s)",
                                [(uid, slot, bool(private), blob) for uid, slot, private, blob in objects])
            c.execute("SELECT setval(pg_get_serial_sequence('ptkhsm_objects', 'uid'), "
                      "GREATEST((SELECT max(uid) FROM ptkhsm_objects), 1))")
        self._run("write store", work, TRANSACTION)

    def close(self):
        with self._lock:
            self._closed = True
            self._drop()


def describe(params):
    """Where the store is, for messages: the connection parameters without the password."""
    if "service" in params:
        return f"postgresql service={params['service']}"
    shown = [f"{key}={params[key]}" for key in ("host", "port", "dbname", "user") if params.get(key)]
    return "postgresql " + (" ".join(shown) or "(libpq defaults)")


def _session_params(connect_timeout, statement_timeout, options):
    """libpq parameters bounding every wait (the conninfo's own settings win)."""
    ms = statement_timeout * 1000
    server = f"-c statement_timeout={ms} -c lock_timeout={ms} -c idle_in_transaction_session_timeout={ms}"
    return {"application_name": "ptkhsm",
            "options": f"{options} {server}" if options else server,
            "keepalives": "1", "keepalives_idle": str(max(1, statement_timeout // 2)),
            "keepalives_interval": "1", "keepalives_count": "3",
            "tcp_user_timeout": str(ms)}
