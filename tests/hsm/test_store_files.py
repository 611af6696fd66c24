"""The data directory's files (docs/security.md): private modes and owner checked on
open, the storage key in its own file and recognised, a store of schema 1 (public
objects in clear) sealed on open; every refusal a CKR_DEVICE_ERROR naming the path
and the fix, with the data left as it was."""

import os
import sqlite3
import stat

import pytest

from ptkhsm import constants as C
from ptkhsm import schema
from ptkhsm.errors import CKRError

from hsm_engine import RW, make_hsm, ready_hsm, user_session

SECRET = bytes.fromhex("0123456789abcdef" * 4)


def _public_key(hsm):
    s = user_session(hsm)
    hsm.create_object(s, [(C.CKA_CLASS, C.CKO_SECRET_KEY), (C.CKA_KEY_TYPE, C.CKK_AES), (C.CKA_TOKEN, True),
                          (C.CKA_PRIVATE, False), (C.CKA_SENSITIVE, True), (C.CKA_VALUE, SECRET),
                          (C.CKA_LABEL, b"public-sensitive")])
    hsm.close_session(s)


def _ready(path, **items):
    return ready_hsm(path, b"files", **items)


def _count_public(path, **items):
    hsm = make_hsm(path, **items)
    s = hsm.open_session(0, RW)
    hsm.find_init(s, [(C.CKA_LABEL, b"public-sensitive")])
    return len(hsm.find(s, 10))


def _refused(path, *words, **items):
    with pytest.raises(CKRError) as info:
        make_hsm(path, **items)
    assert info.value.rv == C.CKR_DEVICE_ERROR
    for word in words:
        assert word in str(info.value), str(info.value)
    return str(info.value)


def test_modes(tmp_path):
    data = tmp_path / "new"
    _ready(data)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in data.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.parametrize("mode", [0o770, 0o702, 0o777])
def test_writable_data_directory_refused(tmp_path, mode):
    _public_key(_ready(tmp_path))
    os.chmod(tmp_path, mode)
    try:
        _refused(tmp_path, str(tmp_path), "group- or world-writable", "chmod 700")
    finally:
        os.chmod(tmp_path, 0o700)
    assert _count_public(tmp_path) == 1  # nothing was touched


@pytest.mark.parametrize("name", ["ptkhsm.db", "storage.key"])
def test_readable_files_refused(tmp_path, name):
    _public_key(_ready(tmp_path))
    os.chmod(tmp_path / name, 0o644)
    _refused(tmp_path, name, "chmod 600")
    os.chmod(tmp_path / name, 0o600)
    assert _count_public(tmp_path) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
@pytest.mark.parametrize("target", ["dir", "ptkhsm.db", "storage.key"])
def test_wrong_owner_refused(tmp_path, target):
    _public_key(_ready(tmp_path))
    path = tmp_path if target == "dir" else tmp_path / target
    os.chown(path, 65534, 65534)
    try:
        _refused(tmp_path, "owned by uid 65534", "chown")
    finally:
        os.chown(path, 0, 0)
    assert _count_public(tmp_path) == 1


def test_storage_key_missing_or_foreign_refused(tmp_path):
    _public_key(_ready(tmp_path))
    key = (tmp_path / "storage.key").read_bytes()
    (tmp_path / "storage.key").unlink()
    _refused(tmp_path, "storage.key", "missing", "restore it")
    assert not (tmp_path / "storage.key").exists()  # no new key made over the old objects
    other = tmp_path / "other"
    _ready(other)
    os.replace(other / "storage.key", tmp_path / "storage.key")
    _refused(tmp_path, "is not this store's")
    (tmp_path / "storage.key").write_bytes(b"short")
    _refused(tmp_path, "5 bytes")
    (tmp_path / "storage.key").write_bytes(key)
    assert _count_public(tmp_path) == 1


def test_storage_key_file_elsewhere(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    items = {"ET_PTKC_SW_STORAGE_KEYFILE": keys / "hsm.key"}
    _public_key(_ready(tmp_path / "data", **items))
    assert (keys / "hsm.key").exists() and not (tmp_path / "data" / "storage.key").exists()
    assert _count_public(tmp_path / "data", **items) == 1
    _refused(tmp_path / "data", "missing")  # the default place has none


def test_schema_1_store_sealed_on_open(tmp_path):
    """A store written before public objects were sealed: opened, sealed, readable, and no
    clear copy left in the database or its WAL."""
    _ready(tmp_path)
    db = sqlite3.connect(tmp_path / "ptkhsm.db")
    attrs = {C.CKA_CLASS: C.CKO_SECRET_KEY, C.CKA_KEY_TYPE: C.CKK_AES, C.CKA_TOKEN: True, C.CKA_PRIVATE: False,
             C.CKA_SENSITIVE: True, C.CKA_VALUE: SECRET, C.CKA_LABEL: b"public-sensitive"}
    with db:
        db.execute("DELETE FROM objects")  # a schema 1 store holds no sealed rows (the adapter object)
        db.execute("INSERT INTO objects (slot, private, blob) VALUES (0, 0, ?)",
                   (schema.encode_template(tuple(attrs.items())),))
        db.execute("UPDATE meta SET value='1' WHERE key='schema'")
        db.execute("DELETE FROM meta WHERE key='storage_check'")
    db.close()
    (tmp_path / "storage.key").unlink()
    hsm = make_hsm(tmp_path)
    s = user_session(hsm)
    hsm.find_init(s, [(C.CKA_LABEL, b"public-sensitive")])
    (handle,) = hsm.find(s, 10)
    assert hsm.get_attributes(s, handle, [C.CKA_SENSITIVE])[0] is True
    for path in tmp_path.iterdir():
        assert SECRET[:8] not in path.read_bytes(), path
    assert _count_public(tmp_path) == 1
