"""The HSM engine alone, through plain Python calls (no .so): login state machine,
PIN counters, store durability, secrets at rest, attribute policy."""

import sqlite3
from pathlib import Path

import pytest

from ptkhsm import constants as C
from ptkhsm.errors import CKRError
from ptkhsm.mechparams import Mechanism

from hsm_engine import RO, RW, SO, USER, aes_key, find, hsm, make_hsm, rv_of, user_session  # noqa: F401 (fixture)


def test_slot_layout(tmp_path):
    hsm = make_hsm(tmp_path, ET_PTKC_SW_USER_SLOTS=3)
    assert hsm.slot_list() == [0, 1, 2, 3]
    admin = hsm.token_info(3)
    assert admin["label"].startswith(b"AdminToken(")
    assert admin["flags"] & C.CKF_ADMIN_TOKEN and admin["flags"] & C.CKF_LOGIN_REQUIRED
    assert len(admin["label"]) == 32 and len(admin["serial"]) == 16
    assert not hsm.token_info(0)["flags"] & C.CKF_TOKEN_INITIALIZED


def test_pin_counters_and_lockout(tmp_path):
    hsm = make_hsm(tmp_path, ET_PTKC_SW_MAX_LOGIN_FAILURES=3)
    hsm.init_token(0, SO, b"x".ljust(32))
    s = hsm.open_session(0, RW)
    hsm.login(s, C.CKU_SO, SO)
    hsm.init_pin(s, USER)
    hsm.logout(s)
    assert rv_of(hsm.login, s, C.CKU_USER, b"0000") == C.CKR_PIN_INCORRECT
    assert hsm.token_info(0)["flags"] & C.CKF_USER_PIN_COUNT_LOW
    assert rv_of(hsm.login, s, C.CKU_USER, b"0000") == C.CKR_PIN_INCORRECT
    assert hsm.token_info(0)["flags"] & C.CKF_USER_PIN_FINAL_TRY
    assert rv_of(hsm.login, s, C.CKU_USER, b"0000") == C.CKR_PIN_LOCKED
    assert rv_of(hsm.login, s, C.CKU_USER, USER) == C.CKR_PIN_LOCKED  # even the right PIN
    assert hsm.token_info(0)["flags"] & C.CKF_USER_PIN_LOCKED
    # the counter is persistent: a new "process" sees the lock
    assert make_hsm(tmp_path, ET_PTKC_SW_MAX_LOGIN_FAILURES=3).token_info(0)["flags"] & C.CKF_USER_PIN_LOCKED
    # the SO unlocks by setting a new user PIN
    hsm.login(s, C.CKU_SO, SO)
    hsm.init_pin(s, b"5678")
    hsm.logout(s)
    hsm.login(s, C.CKU_USER, b"5678")


def test_success_resets_counter(hsm):
    s = hsm.open_session(0, RW)
    assert rv_of(hsm.login, s, C.CKU_USER, b"0000") == C.CKR_PIN_INCORRECT
    hsm.login(s, C.CKU_USER, USER)
    assert not hsm.token_info(0)["flags"] & C.CKF_USER_PIN_COUNT_LOW


def test_pin_length_limits(hsm):
    s = hsm.open_session(0, RW)
    hsm.login(s, C.CKU_SO, SO)
    assert rv_of(hsm.init_pin, s, b"123") == C.CKR_PIN_LEN_RANGE
    assert rv_of(hsm.init_pin, s, b"1" * 33) == C.CKR_PIN_LEN_RANGE


def test_set_pin(hsm):
    s = user_session(hsm)
    key = aes_key(hsm, s)
    hsm.set_pin(s, USER, b"9999")
    hsm.close_session(s)
    s = hsm.open_session(0, RW)
    assert rv_of(hsm.login, s, C.CKU_USER, USER) == C.CKR_PIN_INCORRECT
    hsm.login(s, C.CKU_USER, b"9999")
    assert key in find(hsm, s)  # private objects still open with the new PIN


def test_login_state_machine(hsm):
    ro = hsm.open_session(0, RO)
    assert rv_of(hsm.login, ro, C.CKU_SO, SO) == C.CKR_SESSION_READ_ONLY_EXISTS
    hsm.login(ro, C.CKU_USER, USER)
    assert hsm.session_info(ro)[1] == C.CKS_RO_USER_FUNCTIONS
    rw = hsm.open_session(0, RW)
    assert hsm.session_info(rw)[1] == C.CKS_RW_USER_FUNCTIONS  # login is per application
    assert rv_of(hsm.login, rw, C.CKU_USER, USER) == C.CKR_USER_ALREADY_LOGGED_IN
    assert rv_of(hsm.login, rw, C.CKU_SO, SO) == C.CKR_USER_ANOTHER_ALREADY_LOGGED_IN
    hsm.logout(rw)
    assert hsm.session_info(ro)[1] == C.CKS_RO_PUBLIC_SESSION
    assert rv_of(hsm.logout, rw) == C.CKR_USER_NOT_LOGGED_IN
    hsm.login(rw, C.CKU_USER, USER)
    hsm.close_session(ro)
    hsm.close_session(rw)  # the last session closes: logged out
    s = hsm.open_session(0, RO)
    assert hsm.session_info(s)[1] == C.CKS_RO_PUBLIC_SESSION


def test_read_only_session(hsm):
    s = user_session(hsm, RO)
    assert rv_of(aes_key, hsm, s) == C.CKR_SESSION_READ_ONLY
    session_key = aes_key(hsm, s, token=False)  # session objects are fine
    assert session_key in find(hsm, s)


def test_private_objects_invisible_before_login(hsm):
    s = user_session(hsm)
    private = aes_key(hsm, s)
    public = aes_key(hsm, s, private=False)
    hsm.logout(s)
    assert find(hsm, s) == [public]
    assert rv_of(hsm.get_attributes, s, private, [C.CKA_LABEL]) == C.CKR_OBJECT_HANDLE_INVALID
    assert rv_of(aes_key, hsm, s) == C.CKR_USER_NOT_LOGGED_IN


def test_token_objects_persist_session_objects_do_not(hsm, tmp_path):
    s = user_session(hsm)
    aes_key(hsm, s, extra={C.CKA_LABEL: b"durable"})
    aes_key(hsm, s, token=False, extra={C.CKA_LABEL: b"fleeting"})
    other = make_hsm(tmp_path)  # another process on the same data directory
    s2 = user_session(other)
    labels = [other.get_attributes(s2, h, [C.CKA_LABEL])[0] for h in find(other, s2)]
    assert labels == [b"durable"]


def test_changes_by_another_process_are_seen(hsm, tmp_path):
    s = user_session(hsm)
    before = find(hsm, s)
    other = make_hsm(tmp_path)
    s2 = user_session(other)
    new = aes_key(other, s2, extra={C.CKA_LABEL: b"from-elsewhere"})
    after = find(hsm, s)
    assert len(after) == len(before) + 1
    other.destroy_object(s2, new)
    assert len(find(hsm, s)) == len(before)


def test_secret_values_never_in_files(hsm, tmp_path):
    s = user_session(hsm)
    secret = bytes.fromhex("5be1c0ffee5be1c0ffee5be1c0ffee5be1c0ffee5be1c0ffee5be1c0ffee1234")
    hsm.create_object(s, [(C.CKA_CLASS, C.CKO_SECRET_KEY), (C.CKA_KEY_TYPE, C.CKK_AES),
                          (C.CKA_TOKEN, True), (C.CKA_VALUE, secret), (C.CKA_LABEL, b"needle")])
    hsm.set_pin(s, USER, b"4321")
    for path in Path(tmp_path).rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert secret not in data and secret[:16] not in data, path
            assert b"needle" not in data, path  # private objects are sealed whole
            assert b"4321" not in data and USER not in data


def test_init_token_wipes_objects(hsm):
    s = user_session(hsm)
    aes_key(hsm, s)
    hsm.close_session(s)
    assert rv_of(hsm.init_token, 0, b"wrongpin", b"x".ljust(32)) == C.CKR_PIN_INCORRECT
    hsm.init_token(0, SO, b"again".ljust(32))
    assert not hsm.token_info(0)["flags"] & C.CKF_USER_PIN_INITIALIZED
    s = hsm.open_session(0, RO)
    assert find(hsm, s) == []


def test_key_history_attributes(hsm):
    s = user_session(hsm)
    generated = hsm.generate_key(s, Mechanism(C.CKM_AES_KEY_GEN),
                                 [(C.CKA_VALUE_LEN, 16), (C.CKA_SENSITIVE, True), (C.CKA_EXTRACTABLE, False)])
    created = aes_key(hsm, s, token=False)
    got = hsm.get_attributes(s, generated, [C.CKA_LOCAL, C.CKA_ALWAYS_SENSITIVE, C.CKA_NEVER_EXTRACTABLE,
                                            C.CKA_KEY_GEN_MECHANISM])
    assert got == [True, True, True, C.CKM_AES_KEY_GEN]
    got = hsm.get_attributes(s, created, [C.CKA_LOCAL, C.CKA_ALWAYS_SENSITIVE, C.CKA_KEY_GEN_MECHANISM])
    assert got == [False, False, C.CK_UNAVAILABLE_INFORMATION]


def test_attribute_change_rules(hsm):
    s = user_session(hsm)
    key = aes_key(hsm, s, extra={C.CKA_SENSITIVE: False, C.CKA_EXTRACTABLE: True})
    hsm.set_attributes(s, key, [(C.CKA_SENSITIVE, True)])
    assert rv_of(hsm.set_attributes, s, key, [(C.CKA_SENSITIVE, False)]) == C.CKR_ATTRIBUTE_READ_ONLY
    hsm.set_attributes(s, key, [(C.CKA_EXTRACTABLE, False)])
    assert rv_of(hsm.set_attributes, s, key, [(C.CKA_EXTRACTABLE, True)]) == C.CKR_ATTRIBUTE_READ_ONLY
    assert rv_of(hsm.set_attributes, s, key, [(C.CKA_VALUE, b"x" * 16)]) == C.CKR_ATTRIBUTE_READ_ONLY
    assert rv_of(hsm.set_attributes, s, key, [(C.CKA_TRUSTED, True)]) == C.CKR_ATTRIBUTE_READ_ONLY
    assert rv_of(hsm.set_attributes, s, key, [(C.CKA_MODULUS, b"\1")]) == C.CKR_ATTRIBUTE_TYPE_INVALID
    value = hsm.get_attributes(s, key, [C.CKA_VALUE])[0]
    assert isinstance(value, CKRError) and value.rv == C.CKR_ATTRIBUTE_SENSITIVE
    frozen = aes_key(hsm, s, extra={C.CKA_MODIFIABLE: False})
    assert rv_of(hsm.set_attributes, s, frozen, [(C.CKA_LABEL, b"x")]) == C.CKR_ACTION_PROHIBITED
    copy = hsm.copy_object(s, frozen, [(C.CKA_TOKEN, False)])  # copy may change CKA_TOKEN
    assert hsm.get_attributes(s, copy, [C.CKA_TOKEN]) == [False]


def test_usage_flags_enforced(hsm):
    s = user_session(hsm)
    key = aes_key(hsm, s, extra={C.CKA_ENCRYPT: False})
    assert rv_of(hsm.encrypt_init, s, Mechanism(C.CKM_AES_ECB), key) == C.CKR_KEY_FUNCTION_NOT_PERMITTED
    limited = aes_key(hsm, s, extra={C.CKA_ALLOWED_MECHANISMS: (C.CKM_AES_CBC,)})
    assert rv_of(hsm.encrypt_init, s, Mechanism(C.CKM_AES_ECB), limited) == C.CKR_MECHANISM_INVALID


def test_templates_round_trip(hsm):
    s = user_session(hsm)
    template = ((C.CKA_EXTRACTABLE, True), (C.CKA_LABEL, b"inner"))
    key = aes_key(hsm, s, extra={C.CKA_WRAP_TEMPLATE: template})
    other = make_hsm(Path(hsm.store.path).parent)
    s2 = user_session(other)
    handle = [h for h in find(other, s2) if other.get_attributes(s2, h, [C.CKA_WRAP_TEMPLATE])[0] == template]
    assert handle, "CKA_WRAP_TEMPLATE lost in the store"
    assert key


def test_single_and_multi_part_do_not_mix(hsm):
    s = user_session(hsm)
    key = aes_key(hsm, s, token=False)
    mac_key = hsm.create_object(s, [(C.CKA_CLASS, C.CKO_SECRET_KEY), (C.CKA_KEY_TYPE, C.CKK_GENERIC_SECRET),
                                    (C.CKA_VALUE, b"k" * 32), (C.CKA_VERIFY, True)])
    hsm.verify_init(s, Mechanism(C.CKM_SHA256_HMAC), mac_key)
    hsm.verify_update(s, b"part")
    assert rv_of(hsm.verify, s, b"data", b"\0" * 32) == C.CKR_OPERATION_NOT_INITIALIZED
    hsm.encrypt_init(s, Mechanism(C.CKM_AES_ECB), key)
    hsm.encrypt(s, b"\0" * 16, None)  # a length query of the single-part call
    assert rv_of(hsm.encrypt_final, s, 16) == C.CKR_OPERATION_NOT_INITIALIZED


def test_damaged_store_is_a_device_error_naming_it(hsm, tmp_path):
    """A store file that is not sqlite, and a stored object whose bytes are damaged, give
    CKR_DEVICE_ERROR with a message naming them, never another exception."""
    s = hsm.open_session(0, RW)
    hsm.create_object(s, [(C.CKA_CLASS, C.CKO_DATA), (C.CKA_TOKEN, True), (C.CKA_LABEL, b"d"),
                          (C.CKA_VALUE, b"v")])
    hsm.close_session(s)
    db = sqlite3.connect(hsm.store.path)
    for damaged in (b"\1\2garbage", b"", b"\xff" * 40, b"\0" * 8 + b"trailing"):
        with db:
            db.execute("UPDATE objects SET blob=? WHERE slot=0", (damaged,))
        other = make_hsm(tmp_path)
        s2 = other.open_session(0, RW)
        with pytest.raises(CKRError) as info:
            other.find_init(s2, [])
        assert info.value.rv == C.CKR_DEVICE_ERROR and "integrity" in str(info.value)  # sealed: tag fails
    db.close()
    not_sqlite = tmp_path / "elsewhere"
    not_sqlite.mkdir()
    (not_sqlite / "ptkhsm.db").write_bytes(b"SQLite format 3\0" + bytes(range(200)))
    with pytest.raises(CKRError) as info:
        make_hsm(not_sqlite)
    assert info.value.rv == C.CKR_DEVICE_ERROR and "ptkhsm.db" in str(info.value)
