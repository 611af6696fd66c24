"""A PostgreSQL server of the tests' own: Debian's binaries, a cluster initdb'd into a
temporary directory as the unprivileged `postgres` user, reachable only through a
unix socket in that directory (listen_addresses=''), stopped and removed at the
end. No system cluster is touched.

Roles: `postgres` (superuser, trust, used by the fixtures only) and `ptkhsm`
(password PASSWORD, scram-sha-256), which owns a fresh database per test.
"""

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest



def _newest_bin():
    """Debian's newest installed PostgreSQL (15 on Debian 12, 17 on Debian 13): /usr/lib/postgresql/<major>/bin."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/postgres") if p.parent.parent.name.isdigit()]
    return max(found, key=lambda b: int(b.parent.name), default=Path("/usr/lib/postgresql/MAJOR/bin"))


BIN = _newest_bin()
PASSWORD = "s3cret-pg-Passw0rd"
ROLE = "ptkhsm"
PORT = 5432  # names the socket file inside the private directory; nothing listens on TCP


class Server:
    def __init__(self):
        self.user = pwd.getpwnam("postgres")
        self.dir = Path(tempfile.mkdtemp(prefix="ptkhsm-pg-"))
        os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        os.chmod(self.dir, 0o700)
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._names = itertools.count(1)

    def as_postgres(self, *argv, **kwargs):
        return subprocess.run(["runuser", "-u", "postgres", "--", *map(str, argv)], check=True,
                              capture_output=True, text=True, timeout=120, **kwargs)

    def initdb(self):
        self.as_postgres(BIN / "initdb", "-D", self.data, "-U", "postgres", "--auth-local=trust",
                         "--auth-host=reject", "-E", "UTF8", "--no-instructions")
        (self.data / "pg_hba.conf").write_text("local all postgres trust\n"
                                               "local all all scram-sha-256\n")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = ''\nunix_socket_directories = '{self.dir}'\nport = {PORT}\n"
                       "max_connections = 200\nshared_buffers = 32MB\n")

    def start(self):
        self.as_postgres(BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start")

    def stop(self, mode="fast"):
        self.as_postgres(BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")

    def sql(self, statement, dbname="postgres"):
        return self.as_postgres(BIN / "psql", "-h", self.dir, "-p", PORT, "-U", "postgres", "-d", dbname,
                                "-v", "ON_ERROR_STOP=1", "-Atc", statement).stdout

    def new_database(self):
        name = f"ptkhsm_t{next(self._names)}"
        self.sql(f"CREATE DATABASE {name} OWNER {ROLE}")
        return name

    def uri(self, dbname, password=PASSWORD):
        auth = f"{ROLE}:{password}" if password is not None else ROLE
        return f"postgresql://{auth}@/{dbname}?host={self.dir}&port={PORT}"

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    if not (BIN / "postgres").exists():
        pytest.fail(f"{BIN}/postgres missing: install Debian's PostgreSQL (make deps)")
    server = Server()
    try:
        server.initdb()
        server.start()
        server.sql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
        yield server
    finally:
        try:
            server.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        server.remove()


@pytest.fixture
def pg_uri(pg_server, tmp_path, monkeypatch):
    """A URI (with the password) of a fresh, empty database. Every member of a group needs
    the same storage key file: the test's members (subprocesses and in-process HSMs,
    whatever their data directories) share one."""
    monkeypatch.setenv("ET_PTKC_SW_STORAGE_KEYFILE", str(tmp_path / "storage.key"))
    # slot 0's ExtToken keeps its token objects in files of the data directory, not in the
    # store: these tests put them in the database
    monkeypatch.setenv("ET_PTKC_EXTTOKEN_ENABLE", "0")
    return pg_server.uri(pg_server.new_database())


def dbname(uri):
    return uri.split("@/", 1)[1].split("?", 1)[0]
