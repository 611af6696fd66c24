"""Two HSMs on one store (the sqlite store of one data directory here; PostgreSQL group
members in tests/pg/test_pg_servers.py): when one re-initialises a token, the other ends
that token's sessions and logins instead of going on with the old data key and objects."""

from ptkhsm import constants as C
from ptkhsm.hsm.core import HSM
from ptkhsm.mechparams import Mechanism

from hsm_engine import RW, SO, USER, aes_key, hsm_config, rv_of

NEW_USER = b"5678"


def initialised(hsm, user_pin):
    hsm.init_token(0, SO, b"group".ljust(32))
    s = hsm.open_session(0, RW)
    hsm.login(s, C.CKU_SO, SO)
    hsm.init_pin(s, user_pin)
    hsm.close_session(s)


def test_re_initialised_token_ends_the_other_hsms_sessions(tmp_path):
    here, there = HSM(hsm_config(tmp_path)).application(), HSM(hsm_config(tmp_path)).application()
    initialised(there, USER)
    s = here.open_session(0, RW)
    here.login(s, C.CKU_USER, USER)
    key = aes_key(here, s)
    ro = here.open_session(0, C.CKF_SERIAL_SESSION)
    here.encrypt_init(s, Mechanism(C.CKM_AES_ECB), key)
    assert here.encrypt(s, bytes(16), 16)

    initialised(there, NEW_USER)  # `there` has no session open: C_InitToken allowed

    # the first call that reads the store (sqlite: a find, login, token-object creation or token
    # information) ends the sessions (CKR_SESSION_CLOSED for the call it happened in)
    assert rv_of(here.find_init, ro, []) == C.CKR_SESSION_CLOSED
    assert rv_of(here.encrypt_init, s, Mechanism(C.CKM_AES_ECB), key) == C.CKR_SESSION_HANDLE_INVALID
    assert rv_of(here.session_info, ro) == C.CKR_SESSION_HANDLE_INVALID
    fresh = here.open_session(0, RW)
    assert here.session_info(fresh)[1] == C.CKS_RW_PUBLIC_SESSION  # the login went with the old token
    assert rv_of(here.login, fresh, C.CKU_USER, USER) == C.CKR_PIN_INCORRECT
    here.login(fresh, C.CKU_USER, NEW_USER)
    here.find_init(fresh, [])
    assert here.find(fresh, 10) == []  # the old token's objects went with it
    here.find_final(fresh)


def test_a_pin_change_elsewhere_ends_nothing(tmp_path):
    here, there = HSM(hsm_config(tmp_path)).application(), HSM(hsm_config(tmp_path)).application()
    initialised(there, USER)
    s = here.open_session(0, RW)
    here.login(s, C.CKU_USER, USER)
    key = aes_key(here, s)
    t = there.open_session(0, RW)
    there.login(t, C.CKU_SO, SO)
    there.set_pin(t, SO, b"87654321")
    there.logout(t)
    there.login(t, C.CKU_USER, USER)
    there.set_pin(t, USER, NEW_USER)
    there.close_session(t)
    here.find_init(s, [(C.CKA_CLASS, C.CKO_SECRET_KEY)])
    assert here.find(s, 10) == [key]
    here.find_final(s)
    assert here.session_info(s)[1] == C.CKS_RW_USER_FUNCTIONS
