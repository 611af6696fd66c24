"""The HSM's persistent store: one sqlite database per data directory.

Rows are opaque to this module: the token layer hands it sealed blobs (private
objects under the token's data key, public ones under `storage_key`, which the
store loads from its key file and checks against the database on open). Every
change is one transaction, committed (synchronous=FULL) before the call
returns. sqlite and OS errors become CKR_DEVICE_ERROR / CKR_DEVICE_MEMORY here,
with the reason; the files' modes and owner are checked by store/files.py.
"""

import contextlib
import os
import sqlite3
import threading
import time

from ... import gate
from ...constants import CKR_DEVICE_ERROR, CKR_DEVICE_MEMORY
from ...errors import CKRError
from . import files, sealing

# 1: public objects in clear (upgraded on open: sealed under the storage key); 2: all sealed
SCHEMA_VERSION = 2
STORAGE_KEY_FILE = "storage.key"

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    slot INTEGER PRIMARY KEY,
    label BLOB NOT NULL,
    so_salt BLOB, so_sealed BLOB,
    user_salt BLOB, user_sealed BLOB,
    so_failures INTEGER NOT NULL DEFAULT 0,
    user_failures INTEGER NOT NULL DEFAULT 0,
    generation BLOB
);
CREATE TABLE IF NOT EXISTS objects (
    uid INTEGER PRIMARY KEY AUTOINCREMENT,
    slot INTEGER NOT NULL,
    private INTEGER NOT NULL,
    blob BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_slot ON objects(slot, private);
"""

# generation: random bytes drawn by each C_InitToken, so that every HSM (process, group
# member) on the store tells a re-initialised token from a PIN change
TOKEN_FIELDS = ("label", "so_salt", "so_sealed", "user_salt", "user_sealed",
                "so_failures", "user_failures", "generation")
FAILURE_COLUMNS = {"so": "so_failures", "user": "user_failures"}


def _device_error(what, exc):
    """The CKRError for a failed store access."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        rv = CKR_DEVICE_MEMORY if code == sqlite3.SQLITE_FULL else CKR_DEVICE_ERROR
        return CKRError(rv, f"store: {what}: {exc}")
    return CKRError(CKR_DEVICE_ERROR, f"store: {what}: {exc.strerror}")


@contextlib.contextmanager
def _device_errors(what):
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise _device_error(what, exc) from None


class Store:
    notifies = False  # version() is a query (store/__init__.py)

    def __init__(self, datapath, key_path=None):
        self.path = os.path.join(datapath, "ptkhsm.db")
        self.key_path = key_path or os.path.join(datapath, STORAGE_KEY_FILE)
        self._lock = threading.RLock()
        files.private_dir(datapath)
        for path in (self.path, f"{self.path}-wal", f"{self.path}-shm"):
            files.check_private_file(path)
        self.storage_key = None
        with _device_errors(f"open {self.path}"):
            old_umask = os.umask(0o077)
            try:
                self._db = sqlite3.connect(self.path, check_same_thread=False,
                                           isolation_level=None, timeout=30)
            finally:
                os.umask(old_umask)
            try:
                self._open_waiting()
            except BaseException:
                self._db.close()
                raise

    def _open_waiting(self, patience=30.0):
        """_open, waiting out another process that opens the same store at the same moment:
        sqlite answers the journal-mode switch "database is locked" at once, without its
        busy timeout (seen with `ptkhsm serve`'s workers starting together)."""
        deadline = time.monotonic() + patience
        while True:
            try:
                return self._open()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def _open(self):
        """Set the connection up; create, upgrade or check the schema and the storage key."""
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA secure_delete=ON")  # freed cells are zeroed, not left to read
        with self._transaction():  # one process at a time: the first one makes the key file
            for statement in _DDL.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            if "generation" not in {column[1] for column in self._db.execute("PRAGMA table_info(tokens)")}:
                self._db.execute("ALTER TABLE tokens ADD COLUMN generation BLOB")  # a store made before it
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif row[0] not in ("1", str(SCHEMA_VERSION)):
                raise CKRError(CKR_DEVICE_ERROR, f"store {self.path}: schema {row[0]}, "
                               f"this ptkhsm reads {SCHEMA_VERSION}")
            # a new store, or one of schema 1 (public objects in clear), adopts the key file's key
            check = self._db.execute("SELECT value FROM meta WHERE key='storage_check'").fetchone()
            if row is None or row[0] == "1":
                recorded = None
            else:  # a schema-2 store without its check value is not opened with any key
                recorded = bytes.fromhex(check[0]) if check else b""
            self.storage_key, new_check = files.storage_key(self.key_path, recorded, self.path)
            if new_check is not None:
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('storage_check', ?)", (new_check.hex(),))
            if row is not None and row[0] == "1":
                self._seal_clear_public_objects()
        if row is not None and row[0] == "1":
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the clear pages leave the WAL too

    def _seal_clear_public_objects(self):
        for uid, blob in self._db.execute("SELECT uid, blob FROM objects WHERE private=0").fetchall():
            self._db.execute("UPDATE objects SET blob=? WHERE uid=?",
                             (sealing.seal_public(self.storage_key, blob), uid))
        self._db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))

    @contextlib.contextmanager
    def _transaction(self):
        gate.let_others_in()  # the commit waits for the disk
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def version(self):
        """sqlite's data_version: changes when another connection (process) commits.
        Asked before every find: written without the context manager, which cost
        as much as the query."""
        with self._lock:
            try:
                return self._db.execute("PRAGMA data_version").fetchone()[0]
            except (sqlite3.Error, OSError) as exc:
                raise _device_error("poll", exc) from None

    def token(self, slot):
        with self._lock, _device_errors("read token"):
            row = self._db.execute(f"SELECT {', '.join(TOKEN_FIELDS)} FROM tokens WHERE slot=?",
                                   (slot,)).fetchone()
        return dict(zip(TOKEN_FIELDS, row)) if row else None

    def update_token(self, slot, **fields):
        assignments = ", ".join(f"{name}=?" for name in fields)
        with _device_errors("write token"), self._transaction():
            self._db.execute(f"UPDATE tokens SET {assignments} WHERE slot=?", (*fields.values(), slot))

    def init_token(self, slot, fields):
        """Destroy the token's objects and write its new row, all or nothing."""
        names = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        with _device_errors("initialise token"), self._transaction():
            self._db.execute("DELETE FROM objects WHERE slot=?", (slot,))
            self._db.execute("DELETE FROM tokens WHERE slot=?", (slot,))
            self._db.execute(f"INSERT INTO tokens (slot, {names}) VALUES (?, {marks})",
                             (slot, *fields.values()))

    def objects(self, slot, private):
        with self._lock, _device_errors("read objects"):
            return self._db.execute("SELECT uid, blob FROM objects WHERE slot=? AND private=?",
                                    (slot, int(private))).fetchall()

    def insert(self, slot, rows):
        """rows: [(private, blob)] stored in one transaction -> their uids."""
        with _device_errors("store object"), self._transaction():
            return [self._db.execute("INSERT INTO objects (slot, private, blob) VALUES (?, ?, ?)",
                                     (slot, int(private), blob)).lastrowid
                    for private, blob in rows]

    def update(self, uid, private, blob):
        with _device_errors("update object"), self._transaction():
            self._db.execute("UPDATE objects SET private=?, blob=? WHERE uid=?", (int(private), blob, uid))

    def delete(self, uid):
        with _device_errors("delete object"), self._transaction():
            self._db.execute("DELETE FROM objects WHERE uid=?", (uid,))

    def use_attempt(self, slot, who, limit):
        """Count a PIN attempt before it is checked -> the new count, or None if the
        count has reached limit. One UPDATE, so parallel guessers each use one attempt."""
        column = FAILURE_COLUMNS[who]
        with _device_errors("count PIN attempt"), self._transaction():
            row = self._db.execute(f"UPDATE tokens SET {column}={column}+1 WHERE slot=? AND {column}<? "
                                   f"RETURNING {column}", (slot, limit)).fetchone()
        return row[0] if row else None

    # -- whole-store copy (ptkhsm store copy) --------------------------------
    def contents(self):
        """-> (token rows {slot: fields}, object rows [(uid, slot, private, blob)]), one snapshot."""
        with _device_errors("read store"), self._transaction():
            tokens = {row[0]: dict(zip(TOKEN_FIELDS, row[1:])) for row in self._db.execute(
                f"SELECT slot, {', '.join(TOKEN_FIELDS)} FROM tokens ORDER BY slot")}
            objects = [(uid, slot, bool(private), blob) for uid, slot, private, blob in self._db.execute(
                "SELECT uid, slot, private, blob FROM objects ORDER BY uid")]
        return tokens, objects

    def replace_contents(self, tokens, objects):
        """Make the store hold exactly these rows (uids kept), all or nothing."""
        with _device_errors("write store"), self._transaction():
            self._db.execute("DELETE FROM objects")
            self._db.execute("DELETE FROM tokens")
            columns, marks = ", ".join(TOKEN_FIELDS), ", ?" * len(TOKEN_FIELDS)
            self._db.executemany(f"INSERT INTO tokens (slot, {columns}) VALUES (?{marks})",
                                 [(slot, *(fields[name] for name in TOKEN_FIELDS)) for slot, fields in tokens.items()])
            self._db.executemany("INSERT INTO objects (uid, slot, private, blob) VALUES (?, ?, ?, ?)",
                                 [(uid, slot, int(private), blob) for uid, slot, private, blob in objects])

    def close(self):
        with self._lock:
            self._db.close()
