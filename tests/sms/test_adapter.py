"""The HSM security flags: the adapter object on the Admin Token, its persistence, who may
change it, and the PTK-C effect of No public crypto and Mode locked."""

import pytest

from ptkhsm import constants as C
from ptkhsm.hsm import adapter
from ptkhsm.hsm.core import HSM
from ptkhsm.mechparams import Mechanism
from hsm_engine import RO, RW, SO, USER, find, hsm_config, rv_of

ADMIN = 2  # two user slots, then the Admin Token


def admin_so(app):
    app.init_token(ADMIN, SO, b"")
    s = app.open_session(ADMIN, RW)
    app.login(s, C.CKU_SO, SO)
    return s


def adapter_handle(app, s):
    found = find(app, s, [(C.CKA_CLASS, C.CKO_ADAPTER)])
    assert len(found) == 1
    return found[0]


def set_flags(app, bits, path):
    s = admin_so(app) if app.tokens[ADMIN].login is None else app.open_session(ADMIN, RW)
    app.set_attributes(s, adapter_handle(app, s), [(C.CKA_SECURITY_MODE, bits)])
    return s


def test_default_flags_are_clear_and_shown_on_the_admin_token(tmp_path):
    app = HSM(hsm_config(tmp_path)).application()
    s = app.open_session(ADMIN, RO)
    h = adapter_handle(app, s)
    mode, fw, label = app.get_attributes(s, h, [C.CKA_SECURITY_MODE, C.CKA_FW_VERSION, C.CKA_LABEL])
    assert mode == 0 and fw == bytes(adapter.DEFAULT_FIRMWARE) and label == b"Adapter"
    assert rv_of(app.destroy_object, s, h) in (C.CKR_ACTION_PROHIBITED, C.CKR_SESSION_READ_ONLY)


def test_the_adapter_object_cannot_be_copied(tmp_path):
    """One object holds the HSM's settings: C_CopyObject of it is refused (it was a
    CKR_GENERAL_ERROR: the fuzzer, seed 2640271151), by the Admin SO too."""
    app = HSM(hsm_config(tmp_path)).application()
    s = admin_so(app)
    h = adapter_handle(app, s)
    assert app.get_attributes(s, h, [C.CKA_COPYABLE]) == [False]
    for template in ([], [(C.CKA_TOKEN, False)], [(C.CKA_LABEL, b"copy")]):
        assert rv_of(app.copy_object, s, h, template) == C.CKR_ACTION_PROHIBITED
    adapter_handle(app, s)   # still exactly one


def test_flags_need_the_admin_so_and_persist(tmp_path):
    app = HSM(hsm_config(tmp_path)).application()
    app.init_token(ADMIN, SO, b"")
    s = app.open_session(ADMIN, RW)
    h = adapter_handle(app, s)
    assert rv_of(app.set_attributes, s, h, [(C.CKA_SECURITY_MODE, C.CKF_NO_CLEAR_PINS)]) == C.CKR_USER_NOT_LOGGED_IN
    app.login(s, C.CKU_SO, SO)
    flags = C.CKF_NO_CLEAR_PINS | C.CKF_FULL_SMS_SIGN
    app.set_attributes(s, h, [(C.CKA_SECURITY_MODE, flags), (C.CKA_FW_VERSION, bytes((5, 0, 0)))])
    assert rv_of(app.set_attributes, s, h, [(C.CKA_SECURITY_MODE, 1 << 40)]) == C.CKR_ATTRIBUTE_VALUE_INVALID
    again = HSM(hsm_config(tmp_path))          # another process on the same store
    assert (again.security_mode, again.firmware) == (flags, (5, 0, 0))


def test_no_public_crypto_needs_a_login(tmp_path):
    app = HSM(hsm_config(tmp_path)).application()
    set_flags(app, C.CKF_NO_PUBLIC_CRYPTO, tmp_path)
    app.init_token(0, SO, b"t".ljust(32))
    app.finalize()
    app = app.hsm.application()      # the flag applies to applications started after the change
    s = app.open_session(0, RW)
    assert rv_of(app.digest_init, s, Mechanism(C.CKM_SHA256, None)) == C.CKR_USER_NOT_LOGGED_IN
    assert rv_of(app.generate_key, s, Mechanism(C.CKM_AES_KEY_GEN, None),
                 [(C.CKA_VALUE_LEN, 32)]) == C.CKR_USER_NOT_LOGGED_IN
    app.login(s, C.CKU_SO, SO)
    app.init_pin(s, USER)
    app.logout(s)
    app.login(s, C.CKU_USER, USER)
    app.digest_init(s, Mechanism(C.CKM_SHA256, None))
    assert len(app.digest(s, b"abc", 64)) == 32


def test_mode_locked_until_the_admin_token_is_initialised_again(tmp_path):
    app = HSM(hsm_config(tmp_path)).application()
    s = set_flags(app, C.CKF_MODE_LOCKED | C.CKF_AUTH_PROTECTION, tmp_path)
    h = adapter_handle(app, s)
    assert rv_of(app.set_attributes, s, h, [(C.CKA_SECURITY_MODE, 0)]) == C.CKR_ACCESS_DENIED
    app.set_attributes(s, h, [(C.CKA_SECURITY_MODE, C.CKF_MODE_LOCKED | C.CKF_AUTH_PROTECTION)])  # no change
    app.close_all_sessions(ADMIN)
    app.init_token(ADMIN, SO, b"")                 # PTK-C's HSM reset: the flags go back to none
    app.hsm.refresh_settings()
    assert app.hsm.security_mode == 0


def test_letters():
    assert adapter.parse_letters("nuNU") == C.CKF_NO_CLEAR_PINS | C.CKF_AUTH_PROTECTION | C.CKF_FULL_SMS_ENC \
        | C.CKF_FULL_SMS_SIGN
    assert adapter.parse_letters("0") == 0
    with pytest.raises(ValueError):
        adapter.parse_letters("nz")
    assert adapter.describe(0) == "Default (No flags set)"
    assert adapter.describe(C.CKF_NO_CLEAR_PINS) == "No clear PINs"
