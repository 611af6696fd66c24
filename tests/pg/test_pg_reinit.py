"""Two HSMs on one PostgreSQL database, in this process: a token re-initialised through
one ends the other's sessions at its next operation init too (the notification costs
no query, so even calls that never read the store look at it)."""

import os
import time

import pytest

from ptkhsm import constants as C
from ptkhsm.config import Config
from ptkhsm.errors import CKRError
from ptkhsm.hsm.core import HSM
from ptkhsm.mechparams import Mechanism

SO, USER, NEW_USER = b"12345678", b"1234", b"5678"
RW = C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION
ECB = Mechanism(C.CKM_AES_ECB)


def rv_of(call, *args):
    with pytest.raises(CKRError) as info:
        call(*args)
    return info.value.rv


def initialised(hsm, user_pin):
    hsm.init_token(0, SO, b"group".ljust(32))
    s = hsm.open_session(0, RW)
    hsm.login(s, C.CKU_SO, SO)
    hsm.init_pin(s, user_pin)
    hsm.close_session(s)


def member(tmp_path, name, pg_uri):
    path = tmp_path / name
    return HSM(Config({"ET_PTKC_SW_DATAPATH": str(path), "HOME": str(path), "ET_PTKC_SW_STORE": pg_uri,
                       "ET_PTKC_SW_PIN_KDF_ITERATIONS": "1000",
                       # the group's key file, which pg_uri's fixture names
                       "ET_PTKC_SW_STORAGE_KEYFILE": os.environ["ET_PTKC_SW_STORAGE_KEYFILE"]})).application()


def test_re_initialised_token_ends_sessions_at_the_next_operation_init(tmp_path, pg_uri):
    here, there = member(tmp_path, "here", pg_uri), member(tmp_path, "there", pg_uri)
    initialised(there, USER)
    s = here.open_session(0, RW)
    here.login(s, C.CKU_USER, USER)
    key = here.create_object(s, [(C.CKA_CLASS, C.CKO_SECRET_KEY), (C.CKA_KEY_TYPE, C.CKK_AES),
                                 (C.CKA_TOKEN, True), (C.CKA_VALUE, bytes(32)), (C.CKA_ENCRYPT, True)])
    here.encrypt_init(s, ECB, key)
    assert len(here.encrypt(s, bytes(16), 16)) == 16
    initialised(there, NEW_USER)
    deadline = time.monotonic() + 5
    while not here.tokens[0].stale() and time.monotonic() < deadline:
        time.sleep(0.01)  # the notification is on its way
    assert rv_of(here.encrypt_init, s, ECB, key) == C.CKR_SESSION_CLOSED
    assert rv_of(here.session_info, s) == C.CKR_SESSION_HANDLE_INVALID
    fresh = here.open_session(0, RW)
    assert rv_of(here.login, fresh, C.CKU_USER, USER) == C.CKR_PIN_INCORRECT
    here.login(fresh, C.CKU_USER, NEW_USER)
    assert rv_of(here.encrypt_init, fresh, ECB, key) == C.CKR_KEY_HANDLE_INVALID
