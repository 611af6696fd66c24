"""CKM_WRAPKEY_DES3_CBC, the PTK-C vendor mechanism that wraps a whole object —
its value and its attributes — in one authenticated cryptogram, so that it can
be rebuilt without a template (ExtToken keeps slot 0's objects this way).

The byte format is in docs/wrapkey-des3-cbc.md. In short:

    body    = F(version) F(iv) F(E) F(a)
    wrapped = body F(CMAC(mK, body))
    E       = DES3-CBC-PAD(wK, iv, F(mK) F(cK))

F(x) is x preceded by its length (32-bit big-endian). `a` is the attribute
block of every attribute; the sensitive ones (key material, see below) are
listed there as absent, and their values are in `cK`, an attribute block
encrypted with the wrapping key together with the random DES2 MAC key mK.

Unwrapping decrypts E first (the MAC key is inside), then checks the MAC over
everything before it; any failure along the way — framing, padding, MAC — is
the same CKR_SIGNATURE_INVALID, so a changed bit can neither yield another
object nor tell which check caught it.
"""

import os
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import cmac, padding
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from ... import constants as C
from ... import schema
from ...errors import CKRError
from . import Row, register
from . import des

VERSION = b"\x01"
MAC_KEY_LEN = 16          # a DES2 key, as PTK-C generates it with CKM_DES2_KEY_GEN
_U32 = struct.Struct(">I")
_ATTR = struct.Struct(">IIB")  # type, length, present


class Malformed(Exception):
    """Anything wrong with the cryptogram before it is authenticated."""


def field(data):
    return _U32.pack(len(data)) + data


class Reader:
    def __init__(self, data):
        self._data, self._pos = bytes(data), 0

    def take(self, size):
        if self._pos + size > len(self._data):
            raise Malformed
        out = self._data[self._pos:self._pos + size]
        self._pos += size
        return out

    def field(self):
        return self.take(_U32.unpack(self.take(4))[0])

    def consumed(self):
        return self._data[:self._pos]

    def end(self):
        if self._pos != len(self._data):
            raise Malformed


def _is_secret(attr_type):
    # Key material of every class travels encrypted: CKA_VALUE, private key parts.
    return bool(schema.flags_of(attr_type) & schema.SENSITIVE)


def encode_attributes(entries):
    """[(type, raw value or None for absent)] -> count, then type, length, present, value."""
    out = [_U32.pack(len(entries))]
    for attr_type, raw in entries:
        out.append(_ATTR.pack(attr_type, len(raw or b""), raw is not None) + (raw or b""))
    return b"".join(out)


def decode_attributes(block):
    """The inverse of encode_attributes (raises Malformed). Offsets into one bytes object:
    ExtToken decodes a cryptogram every time it loads an object."""
    data = bytes(block)
    size = len(data)
    if size < 4:
        raise Malformed
    (count,) = _U32.unpack_from(data, 0)
    pos, out = 4, []
    for _ in range(count):
        if pos + _ATTR.size > size:
            raise Malformed
        attr_type, length, present = _ATTR.unpack_from(data, pos)
        pos += _ATTR.size
        if present == 1:
            if pos + length > size:
                raise Malformed
            out.append((attr_type, data[pos:pos + length]))
            pos += length
        elif present == 0 and not length:
            out.append((attr_type, None))
        else:
            raise Malformed
    if pos != size:
        raise Malformed
    return out


def _raw(attr_type, value):
    """A value as the C ABI lays it out (CK_ULONG: 8 bytes little-endian); a template
    attribute (CKA_WRAP_TEMPLATE...) as a nested attribute block."""
    if not 0 <= attr_type <= 0xFFFFFFFF:
        raise CKRError(C.CKR_KEY_NOT_WRAPPABLE, f"attribute {attr_type:#x} does not fit the format")
    if schema.kind_of(attr_type) == schema.TEMPLATE:
        return encode_attributes([(t, _raw(t, v)) for t, v in value])
    return schema.encode(attr_type, value)


# Decoding whole objects is ExtToken's cold load, and most attributes are CK_BBOOLs: those are
# decoded here without schema.decode's dispatch (its rule: one byte, non-zero is TRUE).
_BOOLS = frozenset(t for t, (kind, _) in schema.SCHEMA.items() if kind == schema.BOOL)


def _value(attr_type, raw):
    if attr_type in _BOOLS and len(raw) == 1:
        return raw[0] != 0
    if schema.kind_of(attr_type) == schema.TEMPLATE:
        entries = decode_attributes(raw)
        if any(r is None for _, r in entries):
            raise Malformed
        return tuple((t, _value(t, r)) for t, r in entries)
    return schema.decode(attr_type, raw)


def split(attrs):
    """An object's attributes -> (clear block, secret block): key material only in the second."""
    items = sorted(attrs.items(), key=lambda item: item[0])
    clear = [(t, None if _is_secret(t) else _raw(t, v)) for t, v in items]
    secret = [(t, _raw(t, v)) for t, v in items if _is_secret(t)]
    return encode_attributes(clear), encode_attributes(secret)


def decode_object(clear_block, secret_block):
    """The authenticated blocks -> attributes, or CKR_WRAPPED_KEY_INVALID if built wrong."""
    try:
        return restore(decode_attributes(clear_block), decode_attributes(secret_block))
    except (Malformed, CKRError):
        raise CKRError(C.CKR_WRAPPED_KEY_INVALID, "wrapped object is not well formed") from None


def _des3_cbc_pad(value, iv, data, encrypt):
    algorithm = Cipher(des.cipher(value), modes.CBC(iv))
    if encrypt:
        padder = padding.PKCS7(64).padder()
        ctx = algorithm.encryptor()
        return ctx.update(padder.update(data) + padder.finalize()) + ctx.finalize()
    ctx, unpadder = algorithm.decryptor(), padding.PKCS7(64).unpadder()
    plain = ctx.update(data) + ctx.finalize()       # ValueError if not whole blocks
    return unpadder.update(plain) + unpadder.finalize()  # ValueError on bad padding


def _mac(key, data):
    ctx = cmac.CMAC(des.cipher(key))
    ctx.update(data)
    return ctx


class WrapKey:
    def wrap(self, row, wrapping_key, param, attrs):
        clear, secret = split(attrs)
        mac_key, iv = des.random_key(MAC_KEY_LEN), os.urandom(des.BLOCK)
        inner = field(mac_key) + field(secret)
        encrypted = _des3_cbc_pad(wrapping_key.attrs[C.CKA_VALUE], iv, inner, encrypt=True)
        body = field(VERSION) + field(iv) + field(encrypted) + field(clear)
        return body + field(_mac(mac_key, body).finalize())

    def unwrap(self, row, key, param, wrapped):
        try:
            reader = Reader(wrapped)
            version, iv, encrypted, clear_block = [reader.field() for _ in range(4)]
            body = reader.consumed()
            tag = reader.field()
            reader.end()
            if version != VERSION or len(iv) != des.BLOCK:
                raise Malformed
            inner = Reader(_des3_cbc_pad(key.attrs[C.CKA_VALUE], iv, encrypted, encrypt=False))
            mac_key, secret_block = inner.field(), inner.field()
            inner.end()
            if len(mac_key) != MAC_KEY_LEN:
                raise Malformed
            _mac(mac_key, body).verify(tag)
        except (Malformed, ValueError, InvalidSignature):
            raise CKRError(C.CKR_SIGNATURE_INVALID, "wrapped object does not verify") from None
        # Authenticated from here: what fails now was built wrong, not changed in transit.
        return decode_object(clear_block, secret_block)


def restore(clear, secret):
    """The object's attributes from the decoded clear and secret blocks (raises Malformed)."""
    absent = {t for t, raw in clear if raw is None}
    if absent != {t for t, _ in secret} or len(secret) != len(absent) or len(clear) != len({t for t, _ in clear}):
        raise Malformed
    return {t: _value(t, raw) for t, raw in clear + secret if raw is not None}


register(Row(C.CKM_WRAPKEY_DES3_CBC, WrapKey(), C.CKF_WRAP | C.CKF_UNWRAP, des.KEY_TYPES, 16, 24,
             info={"object": True}))
