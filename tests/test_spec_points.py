"""Small points of PKCS#11 on pointer arguments, through the real .so with ctypes (python-pkcs11
never passes these NULLs): a NULL PIN, a NULL CKA_ALLOWED_MECHANISMS of length 0, and
C_GenerateRandom of zero bytes into no buffer.
"""

import ctypes

from mechanisms import raw
from ptkhsm import constants as C

U = ctypes.c_ulong


def _template(*attributes):
    array = (raw.CK_ATTRIBUTE * len(attributes))()
    keep = []
    for i, (attr, value) in enumerate(attributes):
        array[i].type = attr
        if value is None:
            array[i].pValue, array[i].ulValueLen = None, 0
        else:
            buf = ctypes.create_string_buffer(value, len(value))
            keep.append(buf)
            array[i].pValue, array[i].ulValueLen = ctypes.addressof(buf), len(value)
    return array, keep


def test_login_with_a_null_pin_is_arguments_bad(token, lib):
    """No protected authentication path (CKF_PROTECTED_AUTHENTICATION_PATH is not set): a NULL
    PIN, whatever its length, is CKR_ARGUMENTS_BAD, not a wrong PIN."""
    assert not token.flags & C.CKF_PROTECTED_AUTHENTICATION_PATH
    with token.open() as session:
        for length in (0, 4):
            assert raw._lib.C_Login(U(session.handle), U(C.CKU_USER), None, U(length)) == C.CKR_ARGUMENTS_BAD
        assert raw._lib.C_GetSessionInfo(U(session.handle), ctypes.byref((U * 4)())) == C.CKR_OK


def test_null_allowed_mechanisms_is_an_empty_list(session):
    """CKA_ALLOWED_MECHANISMS with pValue NULL and ulValueLen 0 is the empty list: every
    mechanism is allowed, and it reads back with length 0."""
    array, keep = _template((C.CKA_CLASS, C.CKO_SECRET_KEY.to_bytes(8, "little")),
                            (C.CKA_KEY_TYPE, C.CKK_AES.to_bytes(8, "little")), (C.CKA_VALUE, bytes(16)),
                            (C.CKA_ENCRYPT, b"\1"), (C.CKA_ALLOWED_MECHANISMS, None))
    handle = U()
    assert raw._lib.C_CreateObject(U(session.handle), array, U(len(array)), ctypes.byref(handle)) == C.CKR_OK
    assert raw.attribute(session, handle.value, C.CKA_ALLOWED_MECHANISMS) == b""
    mech = raw.CK_MECHANISM()
    mech.mechanism = C.CKM_AES_ECB
    assert raw._lib.C_EncryptInit(U(session.handle), ctypes.byref(mech), handle) == C.CKR_OK
    assert raw._lib.C_SessionCancel(U(session.handle), U(C.CKF_ENCRYPT)) == C.CKR_OK


def test_generate_random_of_nothing_into_no_buffer(session):
    """Zero bytes asked for is zero bytes given (p11-kit's RPC passes C_GenerateRandom(buf, 0)
    on as a NULL buffer of length 0)."""
    assert raw._lib.C_GenerateRandom(U(session.handle), None, U(0)) == C.CKR_OK
    assert raw._lib.C_GenerateRandom(U(session.handle), None, U(1)) == C.CKR_ARGUMENTS_BAD
