"""Two applications of one HSM (PKCS#11 scopes login state, sessions and session
objects to an application): each connection of `ptkhsm serve` is one."""

import pytest

from ptkhsm import constants as C
from ptkhsm.hsm.core import HSM
from ptkhsm.mechparams import Mechanism

from hsm_engine import hsm_config, rv_of

SO, USER = b"12345678", b"1234"
RW = C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION
DATA = [(C.CKA_CLASS, C.CKO_DATA), (C.CKA_LABEL, b"mine")]


@pytest.fixture
def hsm(tmp_path):
    hsm = HSM(hsm_config(tmp_path))
    setup = hsm.application()
    setup.init_token(0, SO, b"apps".ljust(32))
    s = setup.open_session(0, RW)
    setup.login(s, C.CKU_SO, SO)
    setup.init_pin(s, USER)
    setup.finalize()
    return hsm


def logged_in(app):
    s = app.open_session(0, RW)
    app.login(s, C.CKU_USER, USER)
    return s


def private_key_object(app, s, label=b"secret"):
    return app.create_object(s, [(C.CKA_CLASS, C.CKO_DATA), (C.CKA_TOKEN, True), (C.CKA_PRIVATE, True),
                                 (C.CKA_LABEL, label), (C.CKA_VALUE, b"v")])


def found(app, s, template=()):
    app.find_init(s, list(template))
    out = app.find(s, 100)
    app.find_final(s)
    return out


def test_login_state_is_per_application(hsm):
    a, b = hsm.application(), hsm.application()
    sa = logged_in(a)
    sb = b.open_session(0, RW)
    assert b.session_info(sb)[1] == C.CKS_RW_PUBLIC_SESSION
    assert a.session_info(sa)[1] == C.CKS_RW_USER_FUNCTIONS
    obj = private_key_object(a, sa)
    assert obj in found(a, sa)
    assert obj not in found(b, sb)  # b is not logged in: private objects are invisible
    assert rv_of(b.get_attributes, sb, obj, [C.CKA_LABEL]) == C.CKR_OBJECT_HANDLE_INVALID
    assert rv_of(b.logout, sb) == C.CKR_USER_NOT_LOGGED_IN
    b.login(sb, C.CKU_USER, USER)  # not "already logged in": a's login is a's
    b.logout(sb)
    assert obj in found(a, sa), "b's logout logged a out"
    assert a.get_attributes(sa, obj, [C.CKA_VALUE]) == [b"v"]


def test_closing_the_last_session_logs_out_only_that_application(hsm):
    a, b = hsm.application(), hsm.application()
    sa, sb = logged_in(a), logged_in(b)
    obj = private_key_object(a, sa)
    b.close_session(sb)
    assert obj in found(a, sa)
    sb = b.open_session(0, RW)
    assert b.session_info(sb)[1] == C.CKS_RW_PUBLIC_SESSION
    assert obj not in found(b, sb)
    b.login(sb, C.CKU_USER, USER)
    assert obj in found(b, sb)


def test_session_objects_belong_to_their_application(hsm):
    a, b = hsm.application(), hsm.application()
    sa, sb = a.open_session(0, RW), b.open_session(0, RW)
    mine = a.create_object(sa, DATA)
    assert found(a, sa, [(C.CKA_LABEL, b"mine")]) == [mine]
    assert found(b, sb, [(C.CKA_LABEL, b"mine")]) == []
    for call, args in ((b.get_attributes, (mine, [C.CKA_LABEL])), (b.destroy_object, (mine,)),
                       (b.set_attributes, (mine, [(C.CKA_LABEL, b"x")])), (b.copy_object, (mine, []))):
        assert rv_of(call, sb, *args) == C.CKR_OBJECT_HANDLE_INVALID


def test_finalize_ends_only_its_own_sessions_operations_and_objects(hsm):
    a, b = hsm.application(), hsm.application()
    sa, sb = logged_in(a), logged_in(b)
    key = a.generate_key(sa, Mechanism(C.CKM_AES_KEY_GEN), [(C.CKA_VALUE_LEN, 16), (C.CKA_LABEL, b"a-key")])
    bkey = b.generate_key(sb, Mechanism(C.CKM_AES_KEY_GEN), [(C.CKA_VALUE_LEN, 16), (C.CKA_LABEL, b"b-key")])
    b.encrypt_init(sb, Mechanism(C.CKM_AES_ECB), bkey)
    b.find_init(sb, [])
    a.encrypt_init(sa, Mechanism(C.CKM_AES_ECB), key)
    a.finalize()
    assert rv_of(a.session_info, sa) == C.CKR_SESSION_HANDLE_INVALID
    assert key not in hsm.application().session_objects
    # b is untouched: its session, login, find and operation go on
    assert b.session_info(sb)[1] == C.CKS_RW_USER_FUNCTIONS
    assert bkey in b.find(sb, 100)
    assert len(b.encrypt(sb, bytes(16), 16)) == 16
    assert hsm.sessions_on(0) == 1
    assert a not in hsm.applications


def test_token_data_key_kept_while_any_application_is_logged_in(hsm):
    a, b = hsm.application(), hsm.application()
    sa, sb = logged_in(a), logged_in(b)
    a.logout(sa)
    private_key_object(b, sb, b"after-a-left")  # sealing needs the token's data key
    b.logout(sb)
    assert hsm.tokens[0]._data_key is None
    assert not [o for o in hsm.tokens[0].objects.values() if o.is_private]


def test_init_token_refused_while_another_application_has_a_session(hsm):
    a, b = hsm.application(), hsm.application()
    a.open_session(0, RW)
    assert rv_of(b.init_token, 0, SO, b"again".ljust(32)) == C.CKR_SESSION_EXISTS
