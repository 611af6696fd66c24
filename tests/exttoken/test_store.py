"""ExtToken through the client interface, in process: files, cache, rules, crash safety."""

import os
import random
import shutil
import signal
import struct
import time
import zlib

import pytest

from ptkhsm import constants as C
from ptkhsm.errors import CKRError
from ptkhsm.exttoken import files as F
from ptkhsm.exttoken.layer import BASE
from ptkhsm.mechparams import Mechanism

from helpers import USER_PIN, RW, aes_key, data_object, files, find, fresh, library, user_session


def ods_files(datapath):
    return {n: p for n, p in files(datapath).items() if n.endswith((".ods", ".ort"))}


def test_objects_survive_a_restart_and_no_key_value_is_in_the_files():
    datapath, lib = fresh()
    api = lib.api
    s = user_session(api)
    secret = bytes(range(100, 132))
    key = aes_key(api, s, b"kept", secret, SENSITIVE=False)
    public = data_object(api, s, b"pub-data", b"public value")
    assert key >= BASE and public >= BASE
    assert api.get_attributes(s, key, [C.CKA_TOKEN, C.CKA_EXTRACTABLE]) == [True, True]
    api.encrypt_init(s, Mechanism(C.CKM_AES_ECB), key)
    ciphertext = api.encrypt(s, bytes(16), 16)
    lib.finalize()

    lib = library(datapath)
    api = lib.api
    s = user_session(api)
    assert find(api, s, [(C.CKA_LABEL, b"kept")]) == [key]        # the same handle, in a new process state
    assert api.get_attributes(s, key, [C.CKA_VALUE]) == [secret]
    api.decrypt_init(s, Mechanism(C.CKM_AES_ECB), key)
    assert api.decrypt(s, ciphertext, 16) == bytes(16)
    lib.finalize()
    names = ods_files(datapath)
    assert any(n.endswith(".public.ods") for n in names) and any(n.endswith(".private.ods") for n in names)
    for path in names.values():
        raw = open(path, "rb").read()
        assert secret not in raw and secret[:8] not in raw
    assert b"public value" not in b"".join(open(p, "rb").read() for p in names.values())


def test_private_objects_are_invisible_before_login_and_unloaded_at_logout():
    datapath, lib = fresh()
    api = lib.api
    s = user_session(api)
    key = aes_key(api, s, b"private-key")
    api.encrypt_init(s, Mechanism(C.CKM_AES_ECB), key)
    api.encrypt(s, bytes(16), 16)
    assert api.loaded_count() == 1
    api.logout(s)
    assert api.loaded_count() == 0
    assert find(api, s, [(C.CKA_LABEL, b"private-key")]) == []
    with pytest.raises(CKRError) as err:
        api.get_attributes(s, key, [C.CKA_LABEL])
    assert err.value.rv == C.CKR_OBJECT_HANDLE_INVALID
    with pytest.raises(CKRError) as err:
        api.encrypt_init(s, Mechanism(C.CKM_AES_ECB), key)
    assert err.value.rv == C.CKR_KEY_HANDLE_INVALID
    api.login(s, C.CKU_USER, USER_PIN)
    assert find(api, s, [(C.CKA_LABEL, b"private-key")]) == [key]
    lib.finalize()


def test_master_keys_and_data_object():
    datapath, lib = fresh()
    api = lib.api
    s = user_session(api)
    # Applications do not see them (nothing to destroy by mistake); the HSM's token holds them.
    assert find(api, s, [(C.CKA_LABEL, b"ExtToken")]) == []
    hsm = api.lower
    data, = find(hsm, s, [(C.CKA_CLASS, C.CKO_DATA), (C.CKA_LABEL, b"ExtToken")])
    value, = hsm.get_attributes(s, data, [C.CKA_VALUE])
    assert value.startswith(b"file:") and any(n.startswith(value[5:].decode()) for n in files(datapath))
    keys = find(hsm, s, [(C.CKA_CLASS, C.CKO_SECRET_KEY), (C.CKA_LABEL, b"ExtToken")])
    assert len(keys) == 2
    for key in keys:
        assert hsm.get_attributes(s, key, [C.CKA_KEY_TYPE, C.CKA_WRAP, C.CKA_UNWRAP, C.CKA_ENCRYPT, C.CKA_DECRYPT,
                                           C.CKA_TOKEN]) == [C.CKK_DES2, True, True, False, False, True]
    lib.finalize()


@pytest.mark.parametrize("attr,value,rv", [
    (C.CKA_TRUSTED, True, C.CKR_ATTRIBUTE_VALUE_INVALID),
    (C.CKA_EXPORT, True, C.CKR_ATTRIBUTE_VALUE_INVALID),
])
def test_refused_attributes(attr, value, rv):
    datapath, lib = fresh()
    api = lib.api
    s = user_session(api)
    with pytest.raises(CKRError) as err:
        aes_key(api, s, b"refused", bytes(16), **{C.CKA(attr).name[4:] if attr < 0x80000000 else "EXPORT": value})
    assert err.value.rv == rv
    key = aes_key(api, s, b"ok")
    with pytest.raises(CKRError) as err:
        api.set_attributes(s, key, [(attr, value)])
    assert err.value.rv == rv
    lib.finalize()


def test_generated_keys_are_made_extractable():
    """As PTK-C: "transparently sets CKA_EXTRACTABLE to TRUE" (pkcs11-tool always asks FALSE)."""
    datapath, lib = fresh()
    api = lib.api
    s = user_session(api)
    key = aes_key(api, s, b"gen", EXTRACTABLE=False)
    assert api.get_attributes(s, key, [C.CKA_EXTRACTABLE, C.CKA_NEVER_EXTRACTABLE]) == [True, False]
    created = aes_key(api, s, b"created", bytes(16), EXTRACTABLE=False)    # pkcs11-tool --write-object
    assert api.get_attributes(s, created, [C.CKA_EXTRACTABLE]) == [True]
    with pytest.raises(CKRError) as err:
        api.set_attributes(s, key, [(C.CKA_EXTRACTABLE, False)])
    assert err.value.rv == C.CKR_ATTRIBUTE_VALUE_INVALID
    session_key = aes_key(api, s, b"session", token=False, EXTRACTABLE=False)   # as on any token
    assert api.get_attributes(s, session_key, [C.CKA_EXTRACTABLE]) == [False]
    lib.finalize()


def test_importing_an_unextractable_key_is_refused():
    datapath, lib = fresh()
    api = lib.api
    s = user_session(api)
    locked = aes_key(api, s, b"locked", token=False, EXTRACTABLE=False)
    with pytest.raises(CKRError) as err:
        api.copy_object(s, locked, [(C.CKA_TOKEN, True)])
    assert err.value.rv == C.CKR_ACTION_PROHIBITED   # the spec list of C_CopyObject (fuzz seed 40)
    assert find(api, s, [(C.CKA_LABEL, b"locked"), (C.CKA_TOKEN, True)]) == []
    lib.finalize()


def test_set_copy_destroy_and_read_only_sessions():
    datapath, lib = fresh()
    api = lib.api
    s = user_session(api)
    key = aes_key(api, s, b"a", ENCRYPT=True)
    api.set_attributes(s, key, [(C.CKA_LABEL, b"b"), (C.CKA_TOKEN, True)])
    assert find(api, s, [(C.CKA_LABEL, b"b"), (C.CKA_ENCRYPT, True)]) == [key]
    with pytest.raises(CKRError) as err:
        api.set_attributes(s, key, [(C.CKA_TOKEN, False)])
    assert err.value.rv == C.CKR_ATTRIBUTE_READ_ONLY
    copy = api.copy_object(s, key, [(C.CKA_LABEL, b"c")])
    assert copy >= BASE and copy != key
    session_copy = api.copy_object(s, key, [(C.CKA_TOKEN, False)])
    assert session_copy < BASE
    ro = api.open_session(0, C.CKF_SERIAL_SESSION)
    for call in (lambda: api.destroy_object(ro, key), lambda: aes_key(api, ro, b"ro"),
                 lambda: api.set_attributes(ro, key, [(C.CKA_LABEL, b"x")])):
        with pytest.raises(CKRError) as err:
            call()
        assert err.value.rv == C.CKR_SESSION_READ_ONLY
    api.destroy_object(s, copy)
    with pytest.raises(CKRError) as err:
        api.get_attributes(s, copy, [C.CKA_LABEL])
    assert err.value.rv == C.CKR_OBJECT_HANDLE_INVALID
    assert find(api, s, [(C.CKA_CLASS, C.CKO_SECRET_KEY), (C.CKA_TOKEN, True)]) == [key]
    lib.finalize()


def test_cache_bound_and_handles_inside_mechanism_parameters():
    datapath, lib = fresh(ET_PTKC_EXTTOKEN_MAXLOADED="3")
    api = lib.api
    s = user_session(api)
    keys = [aes_key(api, s, b"k%d" % i, bytes([i]) * 16, SENSITIVE=False, DERIVE=True) for i in range(10)]
    for i, key in enumerate(keys):
        api.encrypt_init(s, Mechanism(C.CKM_AES_ECB), key)
        api.encrypt(s, bytes(16), 16)
        assert api.loaded_count() <= 3
    derived = api.derive_key(s, Mechanism(C.CKM_CONCATENATE_BASE_AND_KEY, keys[7]), keys[2],
                             [(C.CKA_TOKEN, True), (C.CKA_CLASS, C.CKO_SECRET_KEY),
                              (C.CKA_KEY_TYPE, C.CKK_GENERIC_SECRET), (C.CKA_SENSITIVE, False)])
    assert derived >= BASE
    assert api.get_attributes(s, derived, [C.CKA_VALUE]) == [bytes([2]) * 16 + bytes([7]) * 16]
    lib.finalize()


def test_compaction_shrinks_the_ods_and_keeps_live_objects():
    datapath, lib = fresh()
    api = lib.api
    s = user_session(api)
    handles = [data_object(api, s, b"o%d" % i, bytes([i]) * 200) for i in range(60)]
    for h in handles[::2]:
        api.destroy_object(s, h)
    for h in handles[1::4]:
        api.set_attributes(s, h, [(C.CKA_LABEL, b"changed")])
    ods = [p for n, p in files(datapath).items() if n.endswith(".public.ods")][0]
    before = os.path.getsize(ods)
    reclaimed = api._token.files.compact()
    assert reclaimed > 0 and os.path.getsize(ods) < before * 0.6
    lib.finalize()
    lib = library(datapath)
    api = lib.api
    s = user_session(api)
    for i, h in enumerate(handles):
        if i % 2 == 0:
            assert find(api, s, [(C.CKA_LABEL, b"o%d" % i)]) == []
        else:
            label = b"changed" if i % 4 == 1 else b"o%d" % i
            assert h in find(api, s, [(C.CKA_LABEL, label)])
            assert api.get_attributes(s, h, [C.CKA_VALUE]) == [bytes([i]) * 200]
    lib.finalize()


def test_automatic_compaction_past_the_garbage_threshold():
    datapath, lib = fresh()
    api = lib.api
    s = user_session(api)
    api._setup().files.compact_bytes = 20_000
    h = data_object(api, s, b"churn", bytes(500))
    for i in range(100):
        api.set_attributes(s, h, [(C.CKA_LABEL, b"churn%d" % i)])
    ods = [p for n, p in files(datapath).items() if n.endswith(".public.ods")][0]
    assert os.path.getsize(ods) < 40_000
    assert find(api, s, [(C.CKA_LABEL, b"churn99")]) == [h]
    lib.finalize()


def _record_of(path, label):
    raw = bytearray(open(path, "rb").read())
    at = raw.rindex(label)
    return raw, at


def test_a_tampered_cryptogram_is_detected_and_not_loaded(caplog):
    datapath, lib = fresh()
    api = lib.api
    s = user_session(api)
    key = aes_key(api, s, b"victim", bytes(16), SENSITIVE=False)
    other = aes_key(api, s, b"bystander", bytes(16), SENSITIVE=False)
    lib.finalize()
    ods = [p for n, p in files(datapath).items() if n.endswith(".private.ods")][0]
    raw = bytearray(open(ods, "rb").read())
    # Find the victim's record, flip a cryptogram byte and fix the record checksum (a deliberate change).
    pos = F._ODS_HEADER_SIZE
    while pos < len(raw):
        magic, op, oid, meta_len, data_len = struct.unpack_from(">4sBxxxQII", raw, pos)
        total = 28 + meta_len + data_len + 4
        if oid == key - BASE:
            raw[pos + 28 + meta_len + data_len - 12] ^= 1
            raw[pos + total - 4:pos + total] = struct.pack(">I", zlib.crc32(bytes(raw[pos:pos + 24] + raw[pos + 28:pos + total - 4])))
        pos += total
    open(ods, "wb").write(raw)
    lib = library(datapath)
    api = lib.api
    s = user_session(api)
    assert find(api, s, [(C.CKA_LABEL, b"victim")]) == [key]   # the index still lists it
    with pytest.raises(CKRError) as err:
        api.encrypt_init(s, Mechanism(C.CKM_AES_ECB), key)
    assert err.value.rv == C.CKR_DEVICE_ERROR and "does not verify" in str(err.value)
    assert "does not verify" in caplog.text
    api.encrypt_init(s, Mechanism(C.CKM_AES_ECB), other)      # the others still load
    lib.finalize()


def test_files_of_another_token_are_a_clear_error():
    datapath, lib = fresh()
    api = lib.api
    s = user_session(api)
    data_object(api, s, b"x")
    lib.finalize()
    other, lib2 = fresh()
    s2 = user_session(lib2.api)
    data_object(lib2.api, s2, b"y")
    name2 = [n for n in files(other) if n.endswith(".public.ods")][0]
    lib2.finalize()
    name = [n for n in files(datapath) if n.endswith(".public.ods")][0]
    shutil.copy(files(other)[name2], files(datapath)[name])
    lib = library(datapath)
    s = lib.api.open_session(0, RW)
    with pytest.raises(CKRError) as err:
        find(lib.api, s, [(C.CKA_LABEL, b"x")])
    assert err.value.rv == C.CKR_DEVICE_ERROR and "another token" in str(err.value)   # logged too
    lib.finalize()


# -- several processes, and kill -9 ---------------------------------------------------------
def _child(datapath, body):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        finally:
            os._exit(code)
    return pid


def test_four_processes_end_with_the_exact_set():
    datapath, lib = fresh()
    s = user_session(lib.api)
    data_object(lib.api, s, b"seed")           # files and master keys exist before the race
    lib.finalize()

    def worker(n):
        def body():
            child = library(datapath)
            api = child.api
            s = user_session(api)
            mine = [data_object(api, s, b"p%d-%d" % (n, i), b"%d" % i) for i in range(25)]
            for i, h in enumerate(mine):
                if i % 3 == 0:
                    api.destroy_object(s, h)
                elif i % 3 == 1:
                    api.set_attributes(s, h, [(C.CKA_LABEL, b"p%d-%d-changed" % (n, i))])
                assert len(find(api, s, [(C.CKA_CLASS, C.CKO_DATA)])) >= 1
            child.finalize()
        return body

    pids = [_child(datapath, worker(n)) for n in range(4)]
    assert all(os.waitpid(pid, 0)[1] == 0 for pid in pids)
    lib = library(datapath)
    api = lib.api
    s = user_session(api)
    labels = {api.get_attributes(s, h, [C.CKA_LABEL])[0] for h in find(api, s, [(C.CKA_TOKEN, True)])
              if h >= BASE}
    expected = {b"seed"} | {b"p%d-%d" % (n, i) + (b"-changed" if i % 3 == 1 else b"")
                            for n in range(4) for i in range(25) if i % 3}
    assert labels == expected
    lib.finalize()


def test_kill_9_at_random_points_loses_nothing_acknowledged():
    datapath, lib = fresh()
    s = user_session(lib.api)
    data_object(lib.api, s, b"seed")
    lib.finalize()
    rng = random.Random(1234)
    acknowledged = {}
    kills = 0
    while kills < 100:
        read, write = os.pipe()

        def body():
            os.close(read)
            try:
                child = library(datapath)
                api = child.api
                s = user_session(api)
            except BaseException as exc:   # said to the parent, so that a failure explains itself
                os.write(write, b"X %r\n" % exc)
                raise
            os.write(write, b"R\n")
            i = 0
            while True:
                label = b"k%d-%d" % (os.getpid(), i)
                if i % 4 == 3:
                    h = data_object(api, s, label, b"x" * rng.randrange(1, 3000))
                    api.destroy_object(s, h)
                    os.write(write, b"D %d\n" % h)
                else:
                    h = data_object(api, s, label, b"x" * rng.randrange(1, 3000))
                    os.write(write, b"A %d %s\n" % (h, label))
                i += 1

        pid = _child(datapath, body)
        os.close(write)
        stream = os.fdopen(read, "rb")
        ready = stream.readline()
        assert ready == b"R\n", f"kill {kills}: the writer did not start: {ready!r}"
        # its first object acknowledged, then a random moment: every writer counts, however
        # slow the machine (the final check wants more than 100 acknowledged)
        first = stream.readline()
        time.sleep(rng.random() * 0.03)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        for line in (first + stream.read()).splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"A":
                acknowledged[int(parts[1])] = parts[2]
            elif len(parts) == 2 and parts[0] == b"D":
                acknowledged.pop(int(parts[1]), None)
        stream.close()
        kills += 1
    lib = library(datapath)
    api = lib.api
    s = user_session(api)
    def label_of(handle):
        try:
            return api.get_attributes(s, handle, [C.CKA_LABEL])[0]
        except CKRError as exc:
            return exc

    lost = {h: (label, label_of(h)) for h, label in acknowledged.items() if label_of(h) != label}
    assert not lost, f"acknowledged objects lost: {lost}"
    assert len(acknowledged) > 100
    # And the files are still writable after all that.
    data_object(api, s, b"after")
    lib.finalize()


def test_ptkc_vendor_attributes():
    """CKA_DELETABLE FALSE keeps a token object; CKA_IMPORT / CKA_EXPORT without UNWRAP / WRAP
    allow only the CKM_WRAPKEY_* mechanisms (slot 1: an ordinary token)."""
    datapath, lib = fresh()
    api = lib.api
    api.init_token(1, b"12345678", b"one".ljust(32))
    s = api.open_session(1, RW)
    api.login(s, C.CKU_SO, b"12345678")
    api.init_pin(s, USER_PIN)
    api.logout(s)
    api.login(s, C.CKU_USER, USER_PIN)
    kept = data_object(api, s, b"kept")
    locked = api.create_object(s, [(C.CKA_CLASS, C.CKO_DATA), (C.CKA_TOKEN, True), (C.CKA_DELETABLE, False)])
    with pytest.raises(CKRError) as err:
        api.destroy_object(s, locked)
    assert err.value.rv == C.CKR_ACTION_PROHIBITED
    assert api.get_attributes(s, locked, [C.CKA_DELETABLE]) == [False]
    kek = aes_key(api, s, b"kek", bytes(range(24)), token=False, WRAP=False, UNWRAP=False, EXPORT=True, IMPORT=True)
    subject = aes_key(api, s, b"subject", bytes(16), token=False, EXTRACTABLE=True)
    with pytest.raises(CKRError) as err:
        api.wrap_key(s, Mechanism(C.CKM_AES_KEY_WRAP), kek, subject)
    assert err.value.rv == C.CKR_MECHANISM_INVALID
    des = api.create_object(s, [(C.CKA_CLASS, C.CKO_SECRET_KEY), (C.CKA_KEY_TYPE, C.CKK_DES2), (C.CKA_VALUE, bytes(range(16))),
                                (C.CKA_WRAP, False), (C.CKA_UNWRAP, False), (C.CKA_EXPORT, True), (C.CKA_IMPORT, True)])
    blob = api.wrap_key(s, Mechanism(C.CKM_WRAPKEY_DES3_CBC), des, subject)
    assert api.unwrap_key(s, Mechanism(C.CKM_WRAPKEY_DES3_CBC), des, blob, [])
    with pytest.raises(CKRError) as err:
        api.create_object(s, [(C.CKA_CLASS, C.CKO_SECRET_KEY), (C.CKA_KEY_TYPE, C.CKK_AES), (C.CKA_VALUE, bytes(16)),
                              (C.CKA_KEY_SIZE, 128)])
    assert err.value.rv == C.CKR_ATTRIBUTE_READ_ONLY
    lib.finalize()


def test_aes256_master_keys():
    datapath, lib = fresh(ET_PTKC_EXTTOKEN_MASTERKEY="AES256")
    api = lib.api
    s = user_session(api)
    key = aes_key(api, s, b"under-aes", bytes(range(32)), SENSITIVE=False)
    public = data_object(api, s, b"pub", b"hello")
    lib.finalize()
    lib = library(datapath)          # the token's own key type decides, whatever the item says now
    api = lib.api
    s = user_session(api)
    assert api.get_attributes(s, key, [C.CKA_VALUE]) == [bytes(range(32))]
    assert api.get_attributes(s, public, [C.CKA_VALUE]) == [b"hello"]
    masters = find(api.lower, s, [(C.CKA_CLASS, C.CKO_SECRET_KEY), (C.CKA_LABEL, b"ExtToken")])
    assert [api.lower.get_attributes(s, m, [C.CKA_KEY_TYPE, C.CKA_VALUE_LEN]) for m in masters] == [
        [C.CKK_AES, 32]] * 2
    lib.finalize()


def test_wrapkey_aes_kwp_round_trip_and_tamper():
    datapath, lib = fresh()
    api = lib.api
    s = user_session(api)
    kek = api.generate_key(s, Mechanism(C.CKM_AES_KEY_GEN), [(C.CKA_VALUE_LEN, 32), (C.CKA_WRAP, True),
                                                             (C.CKA_UNWRAP, True)])
    subject = aes_key(api, s, b"subject", bytes(range(16)), token=False, SENSITIVE=True, EXTRACTABLE=True)
    blob = api.wrap_key(s, Mechanism(C.CKM_WRAPKEY_AES_KWP), kek, subject)
    assert bytes(range(16)) not in blob
    back = api.unwrap_key(s, Mechanism(C.CKM_WRAPKEY_AES_KWP), kek, blob, [])
    assert api.get_attributes(s, back, [C.CKA_LABEL, C.CKA_SENSITIVE, C.CKA_CHECK_VALUE]) == \
        api.get_attributes(s, subject, [C.CKA_LABEL, C.CKA_SENSITIVE, C.CKA_CHECK_VALUE])
    for i in range(0, len(blob), 7):
        bad = bytearray(blob)
        bad[i] ^= 0x40
        with pytest.raises(CKRError) as err:
            api.unwrap_key(s, Mechanism(C.CKM_WRAPKEY_AES_KWP), kek, bytes(bad), [])
        assert err.value.rv == C.CKR_SIGNATURE_INVALID
    lib.finalize()


def test_two_processes_see_each_others_changes_and_compactions():
    datapath, first = fresh()
    a = first.api
    sa = user_session(a)
    seed = data_object(a, sa, b"seed")
    second = library(datapath)            # another client on the same files (as another process)
    b = second.api
    sb = user_session(b)
    made = data_object(b, sb, b"from-b", b"b's value")
    assert find(a, sa, [(C.CKA_LABEL, b"from-b")]) == [made]
    assert a.get_attributes(sa, made, [C.CKA_VALUE]) == [b"b's value"]
    b.set_attributes(sb, made, [(C.CKA_LABEL, b"renamed")])
    assert find(a, sa, [(C.CKA_LABEL, b"renamed")]) == [made]
    a.destroy_object(sa, seed)
    assert find(b, sb, [(C.CKA_LABEL, b"seed")]) == []
    a.external_files().compact()
    assert b.get_attributes(sb, made, [C.CKA_LABEL]) == [b"renamed"]
    data_object(b, sb, b"after-compaction")
    assert len(find(a, sa, [(C.CKA_LABEL, b"after-compaction")])) == 1
    assert a.get_attributes(sa, made, [C.CKA_LABEL]) == [b"renamed"]   # a write after the ORT kept it
    first.finalize()
    second.finalize()


def test_a_write_after_opening_from_the_ort_keeps_every_object():
    """Opening from a checkpoint that covers the whole log, then writing, loses nothing."""
    datapath, lib = fresh()
    api = lib.api
    s = user_session(api)
    kept = [data_object(api, s, b"kept%d" % i) for i in range(5)]
    api.external_files().compact()            # ends with a checkpoint of everything
    lib.finalize()
    for round_ in range(3):
        lib = library(datapath)
        api = lib.api
        s = user_session(api)
        kept.append(data_object(api, s, b"more%d" % round_))
        api.external_files()._checkpoint()
        lib.finalize()
    lib = library(datapath)
    api = lib.api
    s = user_session(api)
    assert sorted(h for h in find(api, s, [(C.CKA_CLASS, C.CKO_DATA)]) if h >= BASE) == sorted(kept)
    assert sum(api.external_files().garbage) == 0      # nothing was deleted or rewritten
    lib.finalize()


def test_threads_share_one_layer():
    import threading
    datapath, lib = fresh()
    api = lib.api
    errors = []

    def work(n):
        try:
            s = api.open_session(0, RW)
            for i in range(20):
                h = aes_key(api, s, b"t%d-%d" % (n, i), bytes([n, i]) * 8, SENSITIVE=False)
                api.encrypt_init(s, Mechanism(C.CKM_AES_ECB), h)
                api.encrypt(s, bytes(16), 16)
                assert find(api, s, [(C.CKA_LABEL, b"t%d-%d" % (n, i))]) == [h]
                if i % 2:
                    api.destroy_object(s, h)
        except Exception as exc:   # reported below
            errors.append(exc)

    s = user_session(api)       # the user logged in for every session of the application
    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len([h for h in find(api, s, [(C.CKA_CLASS, C.CKO_SECRET_KEY)]) if h >= BASE]) == 40
    lib.finalize()


def test_disabled_slot_0_is_an_ordinary_token():
    datapath, lib = fresh(ET_PTKC_EXTTOKEN_ENABLE="0")
    api = lib.api
    s = user_session(api)
    key = aes_key(api, s, b"plain", EXTRACTABLE=False)
    assert key < BASE and api.get_attributes(s, key, [C.CKA_EXTRACTABLE]) == [False]
    assert not os.path.exists(os.path.join(datapath, "exttoken"))
    lib.finalize()


def _wrap_rv(api, s, kek, key):
    try:
        api.wrap_key(s, Mechanism(C.CKM_AES_KEY_WRAP), kek, key)
        return C.CKR_OK
    except CKRError as exc:
        return exc.rv


def test_exportable_false_forbids_wrapping_the_key_out():
    """PTK-C's CKA_EXPORTABLE: FALSE (it can only become FALSE) and the key is never wrapped,
    whatever its CKA_EXTRACTABLE; on slot 0 too, where the layer keeps the flag in the record."""
    datapath, lib = fresh()
    api = lib.api
    api.init_token(1, b"12345678", b"one".ljust(32))
    s1 = api.open_session(1, RW)
    api.login(s1, C.CKU_SO, b"12345678")
    api.init_pin(s1, USER_PIN)
    api.logout(s1)
    api.login(s1, C.CKU_USER, USER_PIN)
    for s in (s1, user_session(api)):
        kek = aes_key(api, s, b"kek", bytes(range(16)), token=False, WRAP=True)
        kept = aes_key(api, s, b"kept", bytes(16), EXPORTABLE=False, SIGN=True, EXTRACTABLE=True)
        free = aes_key(api, s, b"free", bytes(16), SIGN=True, EXTRACTABLE=True)
        assert api.get_attributes(s, kept, [C.CKA_EXPORTABLE, C.CKA_EXTRACTABLE]) == [False, True]
        assert _wrap_rv(api, s, kek, kept) == C.CKR_KEY_UNEXTRACTABLE
        assert _wrap_rv(api, s, kek, free) == C.CKR_OK
        api.sign_init(s, Mechanism(C.CKM_AES_CMAC), kept)            # it is used as any key
        assert len(api.sign(s, b"x", 16)) == 16
        with pytest.raises(CKRError) as err:
            api.set_attributes(s, kept, [(C.CKA_EXPORTABLE, True)])
        assert err.value.rv == C.CKR_ATTRIBUTE_READ_ONLY
        api.set_attributes(s, kept, [(C.CKA_LABEL, b"kept2")])       # a rewrite keeps it
        api.set_attributes(s, free, [(C.CKA_EXPORTABLE, False)])     # TRUE -> FALSE is allowed
        assert _wrap_rv(api, s, kek, free) == C.CKR_KEY_UNEXTRACTABLE
        for token in (False, True):                                   # its copies are unexportable
            copy = api.copy_object(s, kept, [(C.CKA_TOKEN, token)])
            assert api.get_attributes(s, copy, [C.CKA_EXPORTABLE]) == [False]
            assert _wrap_rv(api, s, kek, copy) == C.CKR_KEY_UNEXTRACTABLE
        assert kept in find(api, s, [(C.CKA_EXPORTABLE, False), (C.CKA_LABEL, b"kept2")])
        assert find(api, s, [(C.CKA_EXPORTABLE, True), (C.CKA_LABEL, b"kept2")]) == []
    lib.finalize()
    lib = library(datapath)                                           # and after a restart
    api = lib.api
    s = user_session(api)
    kek = aes_key(api, s, b"kek", bytes(range(16)), token=False, WRAP=True)
    kept = find(api, s, [(C.CKA_LABEL, b"kept2"), (C.CKA_TOKEN, True)])[0]
    assert api.get_attributes(s, kept, [C.CKA_EXPORTABLE, C.CKA_EXTRACTABLE]) == [False, True]
    assert _wrap_rv(api, s, kek, kept) == C.CKR_KEY_UNEXTRACTABLE
    lib.finalize()


def test_a_use_checks_the_log_of_its_object_and_an_object_keeps_its_log(tmp_path):
    """Files.entry() checks only the log of the object's kind (one os.stat per use): what
    another process writes to that log is seen at the next use, and put() refuses to move an
    object to the other log, which entry() would not look at."""
    writer, reader = F.Files(str(tmp_path), "et1"), F.Files(str(tmp_path), "et1")
    for kind in (F.PUBLIC, F.PRIVATE):
        writer.ensure_log(kind, C.CKM_WRAPKEY_DES3_CBC, b"kvc")
    oid = writer.put(None, F.PRIVATE, {C.CKA_LABEL: b"a"}, b"one")
    assert reader.cryptogram(reader.entry(oid)) == b"one"
    writer.put(None, F.PUBLIC, {C.CKA_LABEL: b"b"}, b"other")     # the other log grows
    writer.put(oid, F.PRIVATE, {C.CKA_LABEL: b"a"}, b"two")
    assert reader.cryptogram(reader.entry(oid)) == b"two"
    writer.put(oid, F.PRIVATE, {C.CKA_LABEL: b"a"}, b"three")
    writer.compact()                                               # both logs replaced
    assert reader.cryptogram(reader.entry(oid)) == b"three"
    with pytest.raises(CKRError) as exc:
        writer.put(oid, F.PUBLIC, {C.CKA_LABEL: b"a"}, b"moved")
    assert exc.value.rv == C.CKR_ATTRIBUTE_READ_ONLY
    assert reader.cryptogram(reader.entry(oid)) == b"three"
    writer.delete(oid)
    assert reader.entry(oid) is None
