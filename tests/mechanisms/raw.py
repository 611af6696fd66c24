"""Direct C calls into the module for what python-pkcs11 cannot express
(CKK_EC_MONTGOMERY, CKM_EC_MONTGOMERY_KEY_PAIR_GEN, return codes it has no class
for). Uses the session handles python-pkcs11 opened: same process, same module.
"""

import ctypes
import struct

from conftest import MODULE

CK_ULONG = ctypes.c_ulong
UNAVAILABLE = CK_ULONG(-1).value


class CK_ATTRIBUTE(ctypes.Structure):
    _fields_ = [("type", CK_ULONG), ("pValue", ctypes.c_void_p), ("ulValueLen", CK_ULONG)]


class CK_MECHANISM(ctypes.Structure):
    _fields_ = [("mechanism", CK_ULONG), ("pParameter", ctypes.c_void_p), ("ulParameterLen", CK_ULONG)]


class CKR(Exception):
    def __init__(self, function, rv):
        super().__init__(f"{function} returned {rv:#x}")
        self.rv = rv


_lib = ctypes.CDLL(MODULE)


def _call(name, *args):
    rv = getattr(_lib, name)(*args)
    if rv:
        raise CKR(name, rv)


def _encode(value):
    if isinstance(value, bool):
        return b"\1" if value else b"\0"
    if isinstance(value, int):
        return struct.pack("L", value)
    return bytes(value)


def _template(template):
    items = list(template.items())
    array = (CK_ATTRIBUTE * max(len(items), 1))()
    keep = []
    for i, (attr, value) in enumerate(items):
        raw = ctypes.create_string_buffer(_encode(value), len(_encode(value)) or 1)
        keep.append(raw)
        array[i].type = int(attr)
        array[i].pValue = ctypes.cast(raw, ctypes.c_void_p)
        array[i].ulValueLen = len(_encode(value))
    return array, len(items), keep


def _mechanism(ckm, param=None):
    mech = CK_MECHANISM()
    mech.mechanism = int(ckm)
    keep = None
    if param is not None:
        keep = ctypes.create_string_buffer(param, len(param) or 1)
        mech.pParameter = ctypes.cast(keep, ctypes.c_void_p)
        mech.ulParameterLen = len(param)
    return mech, keep


def ecdh1_params(kdf, shared, public):
    """CK_ECDH1_DERIVE_PARAMS as bytes (which keep the buffers they point into), and those buffers."""
    shared_buf = ctypes.create_string_buffer(shared or b"\0", len(shared or b"\0"))
    public_buf = ctypes.create_string_buffer(public, len(public))
    packed = Packed(struct.pack("LLPLP", kdf, len(shared or b""), ctypes.addressof(shared_buf) if shared else 0,
                                len(public), ctypes.addressof(public_buf)))
    packed.keep = (shared_buf, public_buf)  # alive as long as the parameter is
    return packed, packed.keep


class Packed(bytes):
    """A packed C structure that holds the buffers its pointers point into."""


def generate_keypair(session, ckm, public, private):
    mech, _ = _mechanism(ckm)
    pub, npub, keep1 = _template(public)
    priv, npriv, keep2 = _template(private)
    hpub, hpriv = CK_ULONG(), CK_ULONG()
    _call("C_GenerateKeyPair", CK_ULONG(session.handle), ctypes.byref(mech), pub, CK_ULONG(npub),
          priv, CK_ULONG(npriv), ctypes.byref(hpub), ctypes.byref(hpriv))
    return hpub.value, hpriv.value


def create_object(session, template):
    array, count, keep = _template(template)
    handle = CK_ULONG()
    _call("C_CreateObject", CK_ULONG(session.handle), array, CK_ULONG(count), ctypes.byref(handle))
    return handle.value


def derive(session, ckm, param, base, template):
    mech, keep = _mechanism(ckm, param)
    array, count, keep2 = _template(template)
    handle = CK_ULONG()
    _call("C_DeriveKey", CK_ULONG(session.handle), ctypes.byref(mech), CK_ULONG(base), array,
          CK_ULONG(count), ctypes.byref(handle))
    return handle.value


def attribute(session, obj, attr):
    template = (CK_ATTRIBUTE * 1)()
    template[0].type = int(attr)
    _call("C_GetAttributeValue", CK_ULONG(session.handle), CK_ULONG(obj), template, CK_ULONG(1))
    buf = ctypes.create_string_buffer(template[0].ulValueLen or 1)
    template[0].pValue = ctypes.cast(buf, ctypes.c_void_p)
    _call("C_GetAttributeValue", CK_ULONG(session.handle), CK_ULONG(obj), template, CK_ULONG(1))
    return buf.raw[:template[0].ulValueLen]


def destroy(session, obj):
    _call("C_DestroyObject", CK_ULONG(session.handle), CK_ULONG(obj))


def mechanism_info(slot, ckm):
    """-> (min key size, max key size, flags)."""
    info = (CK_ULONG * 3)()
    _call("C_GetMechanismInfo", CK_ULONG(slot), CK_ULONG(ckm), ctypes.byref(info))
    return tuple(info)


def sign(session, ckm, param, key, data):
    mech, keep = _mechanism(ckm, param)
    _call("C_SignInit", CK_ULONG(session.handle), ctypes.byref(mech), CK_ULONG(key))
    size = CK_ULONG(0)
    _call("C_Sign", CK_ULONG(session.handle), data, CK_ULONG(len(data)), None, ctypes.byref(size))
    out = ctypes.create_string_buffer(size.value or 1)
    _call("C_Sign", CK_ULONG(session.handle), data, CK_ULONG(len(data)), out, ctypes.byref(size))
    return out.raw[:size.value]


def verify(session, ckm, param, key, data, signature):
    """C_VerifyInit + C_Verify; raises CKR with the exact code (python-pkcs11 folds
    CKR_SIGNATURE_LEN_RANGE into a False return)."""
    mech, keep = _mechanism(ckm, param)
    _call("C_VerifyInit", CK_ULONG(session.handle), ctypes.byref(mech), CK_ULONG(key))
    _call("C_Verify", CK_ULONG(session.handle), data, CK_ULONG(len(data)), signature, CK_ULONG(len(signature)))


def init(function, session, ckm, param, key):
    """C_EncryptInit / C_DecryptInit / C_SignInit / C_VerifyInit alone (the checks they make)."""
    mech, keep = _mechanism(ckm, param)
    try:
        _call(function, CK_ULONG(session.handle), ctypes.byref(mech), CK_ULONG(key))
    finally:
        # leave no operation behind for the next test
        for final in ("C_EncryptFinal", "C_DecryptFinal", "C_SignFinal"):
            if function.startswith(final[:-5]):
                size = CK_ULONG(0)
                getattr(_lib, final)(CK_ULONG(session.handle), None, ctypes.byref(size))
                buf = ctypes.create_string_buffer(max(size.value, 1))
                size = CK_ULONG(max(size.value, 1))
                getattr(_lib, final)(CK_ULONG(session.handle), buf, ctypes.byref(size))
        if function == "C_VerifyInit":
            _lib.C_VerifyFinal(CK_ULONG(session.handle), b"", CK_ULONG(0))


def wrap(session, ckm, param, wrapping_key, key):
    mech, keep = _mechanism(ckm, param)
    size = CK_ULONG(0)
    _call("C_WrapKey", CK_ULONG(session.handle), ctypes.byref(mech), CK_ULONG(wrapping_key), CK_ULONG(key),
          None, ctypes.byref(size))
    out = ctypes.create_string_buffer(size.value or 1)
    _call("C_WrapKey", CK_ULONG(session.handle), ctypes.byref(mech), CK_ULONG(wrapping_key), CK_ULONG(key),
          out, ctypes.byref(size))
    return out.raw[:size.value]


def call(name, *args):
    """Any exported C_* function with ctypes arguments; raises CKR on a non-zero return."""
    _call(name, *args)
