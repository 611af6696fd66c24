"""Helpers for the symmetric, wrapping and derivation tests: secret keys with known
values, the parameter structs python-pkcs11 cannot build (passed through as raw
bytes), and C_UnwrapKey / C_CreateObject with templates of our choosing (nested
CKA_WRAP_TEMPLATE / CKA_UNWRAP_TEMPLATE, no python-pkcs11 defaults).
"""

import ctypes
import struct

from pkcs11 import Attribute, ObjectClass

from . import raw

ULONG = "L"  # CK_ULONG on this platform (the module's ABI)


def secret(session, key_type, value, **attrs):
    """A session secret key with CKA_VALUE `value`; attrs by Attribute name, e.g. ENCRYPT=True.
    Extractable and not sensitive unless told, so tests can read results back."""
    template = {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: key_type,
                Attribute.VALUE: value, Attribute.TOKEN: False, Attribute.SENSITIVE: False,
                Attribute.EXTRACTABLE: True}
    template.update({Attribute[name]: v for name, v in attrs.items()})
    return session.create_object(template)


def ulong(value):
    """A CK_ULONG parameter (CK_MAC_GENERAL_PARAMS, CK_OBJECT_HANDLE)."""
    return struct.pack(ULONG, value)


def string_data(data):
    """CK_KEY_DERIVATION_STRING_DATA -> (param bytes, buffer to keep alive during the call)."""
    buf = ctypes.create_string_buffer(data, len(data) or 1)
    return struct.pack(ULONG + ULONG, ctypes.addressof(buf), len(data)), buf


def des_cbc_data(iv, data):
    """CK_DES_CBC_ENCRYPT_DATA_PARAMS -> (param bytes, buffer to keep alive)."""
    buf = ctypes.create_string_buffer(data, len(data) or 1)
    return iv + struct.pack(ULONG + ULONG, ctypes.addressof(buf), len(data)), buf


class _Template:
    """A CK_ATTRIBUTE array from {type: value}; a dict value is a nested template."""

    def __init__(self, template):
        items = list(template.items())
        self.count = len(items)
        self.array = (raw.CK_ATTRIBUTE * max(self.count, 1))()
        self._keep = []
        for i, (attr, value) in enumerate(items):
            self.array[i].type = int(attr)
            if isinstance(value, dict):
                inner = _Template(value)
                self._keep.append(inner)
                self.array[i].pValue = ctypes.cast(inner.array, ctypes.c_void_p)
                self.array[i].ulValueLen = inner.count * ctypes.sizeof(raw.CK_ATTRIBUTE)
                continue
            data = raw._encode(value)
            buf = ctypes.create_string_buffer(data, len(data) or 1)
            self._keep.append(buf)
            self.array[i].pValue = ctypes.cast(buf, ctypes.c_void_p)
            self.array[i].ulValueLen = len(data)


def create(session, template):
    """C_CreateObject -> handle; template values may be nested dicts."""
    t = _Template(template)
    handle = raw.CK_ULONG()
    raw._call("C_CreateObject", raw.CK_ULONG(session.handle), t.array, raw.CK_ULONG(t.count),
              ctypes.byref(handle))
    return handle.value


def unwrap(session, ckm, param, unwrapping_key, wrapped, template=None):
    """C_UnwrapKey with exactly `template` (python-pkcs11 always adds its defaults) -> handle."""
    mech, keep = raw._mechanism(ckm, param)
    t = _Template(template or {})
    handle = raw.CK_ULONG()
    raw._call("C_UnwrapKey", raw.CK_ULONG(session.handle), ctypes.byref(mech), raw.CK_ULONG(unwrapping_key),
              wrapped, raw.CK_ULONG(len(wrapped)), t.array, raw.CK_ULONG(t.count), ctypes.byref(handle))
    return handle.value


def value_of(session, handle, attr):
    return raw.attribute(session, handle, attr)


def check_cavp_cipher(records, mechanism, with_iv):
    """CAVP cipher records as (section, key object, iv, plaintext, ciphertext): the ENCRYPT
    sections encrypt to the ciphertext, the DECRYPT sections decrypt to the plaintext."""
    for section, key, iv, plain, cipher in records:
        param = iv if with_iv else None
        if section == "ENCRYPT":
            assert key.encrypt(plain, mechanism=mechanism, mechanism_param=param) == cipher
        else:
            assert key.decrypt(cipher, mechanism=mechanism, mechanism_param=param) == plain
