"""A call of an active operation that fails ends the operation (PKCS#11 v3.0 §5.2), except
CKR_BUFFER_TOO_SMALL and a length query; and C_SessionCancel ends what it names.

Through the real .so with ctypes (python-pkcs11 never passes NULL pointers), on the
sessions python-pkcs11 opens in the same process. "Ended" is observed as the spec
lets a caller see it: the next Init of the family succeeds instead of returning
CKR_OPERATION_ACTIVE.
"""

import ctypes

import pytest
from pkcs11 import Attribute, KeyType, ObjectClass

from mechanisms import raw
from ptkhsm import constants as C

U = ctypes.c_ulong
NULL = None
DATA = ctypes.create_string_buffer(bytes(range(32)), 32)
BAD_HANDLE = 0xDEADBEEF
FLAG = {"Encrypt": C.CKF_ENCRYPT, "Decrypt": C.CKF_DECRYPT, "Digest": C.CKF_DIGEST, "Sign": C.CKF_SIGN,
        "Verify": C.CKF_VERIFY}


def _lib():
    return raw._lib


def _out():
    buf = ctypes.create_string_buffer(64)
    return buf, U(64)


@pytest.fixture
def keys(session):
    aes = session.create_object({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
                                 Attribute.VALUE: bytes(16), Attribute.ENCRYPT: True, Attribute.DECRYPT: True,
                                 Attribute.TOKEN: False})
    mac = session.create_object({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                 Attribute.KEY_TYPE: KeyType.GENERIC_SECRET, Attribute.VALUE: bytes(32),
                                 Attribute.SIGN: True, Attribute.VERIFY: True, Attribute.TOKEN: False})
    return {"Encrypt": aes.handle, "Decrypt": aes.handle, "Sign": mac.handle, "Verify": mac.handle}


MECHANISM = {"Encrypt": C.CKM_AES_ECB, "Decrypt": C.CKM_AES_ECB, "Digest": C.CKM_SHA256,
             "Sign": C.CKM_SHA256_HMAC, "Verify": C.CKM_SHA256_HMAC}


def _init(family, s, keys):
    mech = raw.CK_MECHANISM()
    mech.mechanism = MECHANISM[family]
    args = [U(s), ctypes.byref(mech)] + ([] if family == "Digest" else [U(keys[family])])
    return getattr(_lib(), f"C_{family}Init")(*args)


def _calls(s):
    """family -> {name: a call that must fail with CKR_ARGUMENTS_BAD or the given code}."""
    out, size = _out()
    lib = _lib()
    h = U(s)
    calls = {}
    for family in ("Encrypt", "Decrypt"):
        one, update, final = (getattr(lib, f"C_{family}{p}") for p in ("", "Update", "Final"))
        calls[family] = {
            "single NULL data": lambda one=one: one(h, NULL, U(16), out, ctypes.byref(size)),
            "single NULL length": lambda one=one: one(h, DATA, U(16), out, NULL),
            "update NULL data": lambda update=update: update(h, NULL, U(16), out, ctypes.byref(size)),
            "update NULL length": lambda update=update: update(h, DATA, U(16), out, NULL),
            "final NULL length": lambda final=final: final(h, out, NULL),
        }
    calls["Digest"] = {
        "single NULL data": lambda: lib.C_Digest(h, NULL, U(4), out, ctypes.byref(size)),
        "single NULL length": lambda: lib.C_Digest(h, DATA, U(4), out, NULL),
        "update NULL data": lambda: lib.C_DigestUpdate(h, NULL, U(4)),
        "update impossible length": lambda: lib.C_DigestUpdate(h, DATA, U(-1)),
        "key bad handle": (lambda: lib.C_DigestKey(h, U(BAD_HANDLE)), C.CKR_KEY_HANDLE_INVALID),
        "final NULL length": lambda: lib.C_DigestFinal(h, out, NULL),
    }
    calls["Sign"] = {
        "single NULL data": lambda: lib.C_Sign(h, NULL, U(4), out, ctypes.byref(size)),
        "single NULL length": lambda: lib.C_Sign(h, DATA, U(4), out, NULL),
        "update NULL data": lambda: lib.C_SignUpdate(h, NULL, U(4)),
        "final NULL length": lambda: lib.C_SignFinal(h, out, NULL),
    }
    calls["Verify"] = {
        "single NULL data": lambda: lib.C_Verify(h, NULL, U(4), DATA, U(32)),
        "single NULL signature": lambda: lib.C_Verify(h, DATA, U(4), NULL, U(32)),
        "update NULL data": lambda: lib.C_VerifyUpdate(h, NULL, U(4)),
        "final NULL signature": lambda: lib.C_VerifyFinal(h, NULL, U(32)),
    }
    return calls


CASES = [(family, name) for family, calls in _calls(0).items() for name in calls]


@pytest.mark.parametrize("family, name", CASES, ids=[f"{f}-{n}" for f, n in CASES])
def test_failed_call_ends_the_operation(session, keys, family, name):
    s = session.handle
    try:
        assert _init(family, s, keys) == C.CKR_OK
        call = _calls(s)[family][name]
        call, expected = call if isinstance(call, tuple) else (call, C.CKR_ARGUMENTS_BAD)
        assert call() == expected
        assert _init(family, s, keys) == C.CKR_OK, "the failed call left the operation active"
    finally:
        _lib().C_SessionCancel(U(s), U(FLAG[family]))


@pytest.mark.parametrize("family", ["Encrypt", "Decrypt", "Digest", "Sign"])
def test_length_query_and_short_buffer_keep_the_operation(session, keys, family):
    s = session.handle
    lib = _lib()
    one = getattr(lib, f"C_{family}")
    size = U(0)
    try:
        assert _init(family, s, keys) == C.CKR_OK
        assert one(U(s), DATA, U(16), NULL, ctypes.byref(size)) == C.CKR_OK
        needed = size.value
        assert needed
        small = ctypes.create_string_buffer(1)
        size = U(1)
        assert one(U(s), DATA, U(16), small, ctypes.byref(size)) == C.CKR_BUFFER_TOO_SMALL
        assert size.value == needed
        assert _init(family, s, keys) == C.CKR_OPERATION_ACTIVE
        out, size = _out()
        assert one(U(s), DATA, U(16), out, ctypes.byref(size)) == C.CKR_OK
        assert size.value == needed
    finally:
        lib.C_SessionCancel(U(s), U(FLAG[family]))


@pytest.mark.parametrize("family", list(FLAG))
def test_session_cancel_after_init(session, keys, family):
    s = session.handle
    lib = _lib()
    assert _init(family, s, keys) == C.CKR_OK
    assert _init(family, s, keys) == C.CKR_OPERATION_ACTIVE
    assert lib.C_SessionCancel(U(s), U(FLAG[family])) == C.CKR_OK
    out, size = _out()
    if family in ("Verify",):
        assert lib.C_VerifyFinal(U(s), DATA, U(32)) == C.CKR_OPERATION_NOT_INITIALIZED
    else:
        final = getattr(lib, f"C_{family}Final")
        assert final(U(s), out, ctypes.byref(size)) == C.CKR_OPERATION_NOT_INITIALIZED
    assert _init(family, s, keys) == C.CKR_OK
    # another family's operation is untouched by a cancel that does not name it
    other = "Digest" if family != "Digest" else "Encrypt"
    assert _init(other, s, keys) == C.CKR_OK
    assert lib.C_SessionCancel(U(s), U(FLAG[family])) == C.CKR_OK
    assert _init(other, s, keys) == C.CKR_OPERATION_ACTIVE
    assert lib.C_SessionCancel(U(s), U(FLAG[other])) == C.CKR_OK
