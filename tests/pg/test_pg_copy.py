"""`ptkhsm store copy`: sqlite -> PostgreSQL -> sqlite, each store then used by the module."""

import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import MODULE, USER_PIN, fresh_env, init_token
from pg.conftest import PASSWORD

PTKHSM = str(Path(sys.executable).with_name("ptkhsm"))


def _copy(*args):
    return subprocess.run([PTKHSM, "store", "copy", *args], capture_output=True, text=True, timeout=120)


def _objects(env):
    listed = subprocess.run(["pkcs11-tool", "--module", MODULE, "--slot", "0", "--login", "--pin", USER_PIN,
                             "--list-objects"], env=env, capture_output=True, text=True, check=True).stdout
    return sorted(line.split(":", 1)[1].strip() for line in listed.splitlines() if line.strip().startswith("label:"))


def test_copy_sqlite_to_postgresql_and_back(pg_uri):
    sqlite_env = fresh_env()
    source = sqlite_env["ET_PTKC_SW_DATAPATH"]
    init_token(sqlite_env)
    tool = ["pkcs11-tool", "--module", MODULE, "--slot", "0", "--login", "--pin", USER_PIN]
    subprocess.run(tool + ["--keypairgen", "--key-type", "EC:prime256v1", "--label", "ec", "--id", "01"],
                   env=sqlite_env, check=True, capture_output=True)
    subprocess.run(tool + ["--keygen", "--key-type", "AES:32", "--label", "aes", "--id", "02"],
                   env=sqlite_env, check=True, capture_output=True)
    expected = _objects(sqlite_env)
    assert expected == ["aes", "ec", "ec"]

    copied = _copy(source, pg_uri)
    assert copied.returncode == 0, copied.stderr
    assert "copied 1 token(s) and 4 object(s)" in copied.stdout  # and the Admin Token's adapter object
    assert _objects(fresh_env(ET_PTKC_SW_STORE=pg_uri)) == expected  # another data directory, same keys

    again = _copy(source, pg_uri)
    assert again.returncode == 1 and "--force" in again.stderr and PASSWORD not in again.stderr

    back = tempfile.mkdtemp(prefix="ptkhsm-back-")
    assert _copy(pg_uri, back).returncode == 0
    assert _objects(fresh_env(ET_PTKC_SW_DATAPATH=back)) == expected
    # --force replaces: an empty store copied over the database leaves it empty.
    empty_env = fresh_env()
    subprocess.run(["pkcs11-tool", "--module", MODULE, "-L"], env=empty_env, check=True, capture_output=True)
    assert _copy(empty_env["ET_PTKC_SW_DATAPATH"], pg_uri).returncode == 1
    assert _copy(empty_env["ET_PTKC_SW_DATAPATH"], pg_uri, "--force").returncode == 0
    emptied = _copy(pg_uri, tempfile.mkdtemp(prefix="ptkhsm-emptied-"))
    # no token; the one object is the adapter object the started HSM keeps its security flags in
    assert "copied 0 token(s) and 1 object(s)" in emptied.stdout, emptied.stderr


def test_copy_refuses_a_missing_source(pg_uri):
    result = _copy("/nonexistent/ptkhsm-store", pg_uri)
    assert result.returncode == 1 and "holds no ptkhsm store" in result.stderr
