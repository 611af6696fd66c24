"""Bad configuration and a damaged disk (docs/security.md): each a clear error at
start or at the call, naming the problem, and the data already stored left intact.
(A wrong owner and loose modes: test_store_files.py.)"""

import os
import subprocess

import pytest

from ptkhsm import constants as C
from ptkhsm.config import ITEMS, Config
from ptkhsm.errors import CKRError, ConfigError

from hsm_engine import make_hsm, ready_hsm, user_session

BAD = {"int": ["many", "", "0x", "1e3", "-1", "99999999999"], "bool": ["maybe", "2"], "path": [""]}


def _kind(item):
    sample = item.default() if callable(item.default) else item.default
    return "bool" if isinstance(sample, bool) else "int" if isinstance(sample, int) else "path" \
        if item.parse.__name__ == "_path" else None


@pytest.mark.parametrize("name", sorted(ITEMS))
def test_malformed_item_named_at_start(tmp_path, name):
    kind = _kind(ITEMS[name])
    if kind is None:
        pytest.skip("free text")
    for text in BAD[kind]:
        try:
            ITEMS[name].parse(name, text)
        except ConfigError as exc:
            assert name in str(exc)
            continue
        if kind == "int":  # a number the range accepts is not malformed
            continue
        pytest.fail(f"{name}={text!r} accepted")
    with pytest.raises(ConfigError) as info:
        Config({"HOME": str(tmp_path), name: BAD[kind][0]}).validate()
    assert name in str(info.value)


def test_malformed_config_file_named_with_its_line(tmp_path):
    config = tmp_path / ".config" / "safenet"
    config.mkdir(parents=True)
    (config / "et_ptkc").write_text('ET_PTKC_SW_SERIAL="X1"\nthis is not an item\n')
    with pytest.raises(ConfigError) as info:
        Config({"HOME": str(tmp_path)}).validate()
    assert "et_ptkc:2" in str(info.value)


@pytest.mark.parametrize("damage", ["not UTF-8", "a directory"])
def test_unreadable_config_file_named(tmp_path, damage):
    config = tmp_path / ".config" / "safenet"
    config.mkdir(parents=True)
    if damage == "a directory":
        (config / "et_ptkc").mkdir()
    else:
        (config / "et_ptkc").write_bytes(b'ET_PTKC_SW_SERIAL="\xff"\n')
    with pytest.raises(ConfigError) as info:
        Config({"HOME": str(tmp_path)}).validate()
    assert "et_ptkc" in str(info.value)


def _filled(hsm):
    s = user_session(hsm)
    hsm.create_object(s, [(C.CKA_CLASS, C.CKO_DATA), (C.CKA_TOKEN, True), (C.CKA_LABEL, b"keep"),
                          (C.CKA_VALUE, b"kept value")])
    hsm.close_session(s)


def _ready(path):
    hsm = ready_hsm(path, b"disk")
    _filled(hsm)
    hsm.store._db.close()


def _kept(path):
    hsm = make_hsm(path)
    s = user_session(hsm)
    hsm.find_init(s, [(C.CKA_LABEL, b"keep")])
    (handle,) = hsm.find(s, 10)
    assert hsm.get_attributes(s, handle, [C.CKA_VALUE]) == [b"kept value"]


@pytest.mark.parametrize("damage", ["truncated", "zeroed header", "directory", "not a directory"])
def test_damaged_store_refused_and_left_as_it_was(tmp_path, damage):
    data = tmp_path / "data"
    _ready(data)
    db = data / "ptkhsm.db"
    original = db.read_bytes()
    if damage == "truncated":
        db.write_bytes(original[:1500])
    elif damage == "zeroed header":
        db.write_bytes(b"\0" * 100 + original[100:])
    elif damage == "directory":
        db.unlink()
        db.mkdir(mode=0o700)
    else:
        data = tmp_path / "file"
        data.write_bytes(b"x")
    damaged = db.read_bytes() if db.is_file() else None
    with pytest.raises(CKRError) as info:
        make_hsm(data, HOME=tmp_path)
    assert info.value.rv == C.CKR_DEVICE_ERROR
    assert str(data) in str(info.value) or "ptkhsm.db" in str(info.value), str(info.value)
    if damaged is not None:
        assert db.read_bytes() == damaged  # refused, not "repaired" into an empty store


@pytest.fixture
def tiny_disk(tmp_path):
    """A 320 KiB tmpfs (needs root and mount(2); skipped elsewhere)."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k,mode=0700", "tmpfs", str(mountpoint)],
                          capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def test_disk_full_is_device_memory_and_loses_nothing(tiny_disk):
    data = tiny_disk / "data"
    _ready(data)
    hsm = make_hsm(data)
    s = user_session(hsm)
    stored = []
    with pytest.raises(CKRError) as info:
        for n in range(1000):
            label = f"fill-{n}".encode()
            hsm.create_object(s, [(C.CKA_CLASS, C.CKO_DATA), (C.CKA_TOKEN, True), (C.CKA_LABEL, label),
                                  (C.CKA_VALUE, os.urandom(4000))])
            stored.append(label)
    assert info.value.rv == C.CKR_DEVICE_MEMORY and "full" in str(info.value), str(info.value)
    assert stored, "the disk was full before the first object"
    hsm.find_init(s, [(C.CKA_CLASS, C.CKO_DATA)])  # the same process goes on reading
    assert len(hsm.find(s, 2000)) == len(stored) + 1
    hsm.find_final(s)
    hsm.close_everything()
    hsm.store._db.close()
    _kept(data)  # a new process finds everything acknowledged
    fresh = make_hsm(data)
    s = user_session(fresh)
    fresh.find_init(s, [(C.CKA_CLASS, C.CKO_DATA)])
    assert len(fresh.find(s, 2000)) == len(stored) + 1


def test_disk_full_at_start_is_a_clear_error(tiny_disk):
    (tiny_disk / "filler").write_bytes(b"\0" * (320 * 1024 - 4096 * 2))
    try:
        with open(tiny_disk / "filler", "ab") as filler:
            while True:
                filler.write(b"\0" * 512)
                filler.flush()
    except OSError:
        pass
    with pytest.raises(CKRError) as info:
        make_hsm(tiny_disk / "data")
    assert info.value.rv in (C.CKR_DEVICE_MEMORY, C.CKR_DEVICE_ERROR)
    assert "data" in str(info.value) or "storage.key" in str(info.value) or "full" in str(info.value), str(info.value)
