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

import hmac
import os
import struct

from cryptography.hazmat.primitives import cmac, padding
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from ... import constants as C
from ... import schema
from ...errors import CKRError
from . import Row, register, remembered
from . import des

VERSION = b"\x01"
MAC_KEY_LEN = 16          # a DES2 key, as PTK-C generates it with CKM_DES2_KEY_GEN
_U32 = struct.Struct(">I")
_ATTR = struct.Struct(">IIB")  # type, length, present


class Malformed(Exception):
    """Anything wrong with the cryptogram before it is authenticated."""


def field(data):
    return _U32.pack(len(data)) + data


def fields(data, count):
    """data as exactly `count` fields -> their values (raises Malformed)."""
    data = bytes(data)
    size, pos, out, length = len(data), 0, [], _U32.unpack_from
    for _ in range(count):
        start = pos + 4
        if start > size:
            raise Malformed
        pos = start + length(data, pos)[0]
        out.append(data[start:pos])     # cut short if pos > size: the next start or the last test refuses it
    if pos != size:
        raise Malformed
    return out


def signed_part(wrapped, tag):
    """What the MAC covers: the cryptogram up to its last field, the tag."""
    return bytes(wrapped[:len(wrapped) - 4 - len(tag)])


def _is_secret(attr_type):
    # Key material of every class travels encrypted: CKA_VALUE, private key parts.
    return attr_type in schema.SENSITIVE_TYPES


def encode_attributes(entries):
    """[(type, raw value or None for absent)] -> count, then type, length, present, value."""
    out = [_U32.pack(len(entries))]
    for attr_type, raw in entries:
        out.append(_ATTR.pack(attr_type, len(raw or b""), raw is not None) + (raw or b""))
    return b"".join(out)


def decode_attributes(block):
    """The inverse of encode_attributes (raises Malformed): the framing of every block."""
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
    if attr_type in schema.TEMPLATE_TYPES:
        return encode_attributes([(t, _raw(t, v)) for t, v in value])
    return schema.encode(attr_type, value)


# Decoding whole objects is ExtToken's cold load. A block of a new shape is read once by
# _parse_block (decode_attributes' framing, then the values): the common kinds are decoded
# inline with schema.decode's rules (a CK_BBOOL is one byte, non-zero TRUE; a CK_ULONG 8 bytes
# little-endian; BYTES and UTF8 as they are), the others, and any wrong length, by
# schema.decode, which refuses what is malformed.
_BOOLS = frozenset(t for t, (kind, _) in schema.SCHEMA.items() if kind == schema.BOOL)
_ULONGS = frozenset(t for t, (kind, _) in schema.SCHEMA.items() if kind == schema.ULONG)
_DECODED = frozenset(t for t, (kind, _) in schema.SCHEMA.items() if kind not in (schema.BYTES, schema.UTF8))
_ULONG_LE = struct.Struct("<Q")


def _value(attr_type, raw):
    if attr_type in schema.TEMPLATE_TYPES:
        entries = decode_attributes(raw)
        if any(r is None for _, r in entries):
            raise Malformed
        return tuple((t, _value(t, r)) for t, r in entries)
    return schema.decode(attr_type, raw)


class _Layout:
    """The shape of a block that decoded: its entries' headers (type, length, presence), in order.

    The objects of a token share a few shapes, so the next block of one shape is read by one
    struct.unpack of its values instead of a loop over its entries; it is that shape only if its
    size is the struct's and its count and headers are the shape's: the bytes under `mask` (those
    of the count and of every header) equal `expected`, i.e. the block is the shape's headers with
    some values in between (one integer test instead of a bytes object per header). Each value then
    decodes as it did in the loop: CK_BBOOLs and CK_ULONGs by the struct ('?': non-zero is TRUE,
    '<Q'), bytes as they are, empty values of other kinds to what they decoded to, and the rest by
    _value again. A shape keeps no value of any object: headers, and what an empty value decodes to."""

    __slots__ = ("struct", "mask", "expected", "types", "absent", "fixed", "later")

    def __init__(self, data, entries, decoded):
        codes, special, skip = ["<4x"], [], f"{_ATTR.size}x"
        mask = bytearray(len(data))
        mask[:4] = b"\xff" * 4
        pos = 4
        for attr_type, raw in entries:
            present, length = raw is not None, len(raw or b"")
            mask[pos:pos + _ATTR.size] = b"\xff" * _ATTR.size
            pos += _ATTR.size + length
            if present and length == 1 and attr_type in _BOOLS:
                codes.append(skip + "?")
            elif present and length == 8 and attr_type in _ULONGS:
                codes.append(skip + "Q")
            else:
                codes.append(f"{skip}{length}s")
                if present and attr_type in _DECODED:
                    special.append((attr_type, length))
        self.struct = struct.Struct("".join(codes))
        self.mask = int.from_bytes(mask, "big")
        # the headers as encode_attributes writes them (decode_attributes accepts no other)
        self.expected = int.from_bytes(data, "big") & self.mask
        self.types = tuple(attr_type for attr_type, _ in entries)
        self.absent = tuple(attr_type for attr_type, raw in entries if raw is None)
        self.fixed = {t: decoded[t] for t, length in special if not length}
        self.later = tuple(t for t, length in special if length)

    def read(self, data):
        """-> {type: value, None if absent}, or None if the block is not of this shape."""
        if len(data) != self.struct.size or int.from_bytes(data, "big") & self.mask != self.expected:
            return None
        out = dict(zip(self.types, self.struct.unpack(data)))
        for attr_type in self.absent:
            out[attr_type] = None
        out.update(self.fixed)
        for attr_type in self.later:
            out[attr_type] = _value(attr_type, out[attr_type])
        return out


_LAYOUTS = {}          # block size -> the last shapes of that size that decoded, newest first
_LAYOUTS_PER_SIZE = 4
_LAYOUT_SIZES = 256    # then forgotten, to be learnt again


def _decode_block(block):
    """An attribute block -> ({type: value, or None if listed absent}, the absent types); each
    type once."""
    data = bytes(block)
    shapes = _LAYOUTS.get(len(data), ())
    for shape in shapes:
        out = shape.read(data)
        if out is not None:
            return out, shape.absent
    out, count, entries = _parse_block(data)
    if count != len(out):
        raise Malformed     # a type twice
    shape = _Layout(data, entries, out)
    if len(_LAYOUTS) >= _LAYOUT_SIZES:
        _LAYOUTS.clear()
    _LAYOUTS[len(data)] = (shape,) + shapes[:_LAYOUTS_PER_SIZE - 1]
    return out, shape.absent


def _parse_block(data):
    """The loop: -> (values, number of entries, [(type, raw value or None)])."""
    entries = decode_attributes(data)
    out, bools, ulongs, decoded = {}, _BOOLS, _ULONGS, _DECODED
    for attr_type, raw in entries:
        if raw is None or attr_type not in decoded:
            out[attr_type] = raw
        elif len(raw) == 1 and attr_type in bools:
            out[attr_type] = raw[0] != 0
        elif len(raw) == 8 and attr_type in ulongs:
            out[attr_type] = _ULONG_LE.unpack(raw)[0]
        else:
            out[attr_type] = _value(attr_type, raw)
    return out, len(entries), entries


def split(attrs):
    """An object's attributes -> (clear block, secret block): key material only in the second."""
    items = sorted(attrs.items(), key=lambda item: item[0])
    clear = [(t, None if _is_secret(t) else _raw(t, v)) for t, v in items]
    secret = [(t, _raw(t, v)) for t, v in items if _is_secret(t)]
    return encode_attributes(clear), encode_attributes(secret)


def decode_object(clear_block, secret_block):
    """The authenticated blocks -> attributes, or CKR_WRAPPED_KEY_INVALID if built wrong: each
    type once; the secret block holds exactly the attributes the clear one lists as absent."""
    try:
        attrs, absent = _decode_block(clear_block)
        secret, secret_absent = _decode_block(secret_block)
        if secret_absent or len(absent) != len(secret) or any(t not in secret for t in absent):
            raise Malformed
    except (Malformed, CKRError):
        raise CKRError(C.CKR_WRAPPED_KEY_INVALID, "wrapped object is not well formed") from None
    attrs.update(secret)
    return attrs


def _des3(key):
    """The wrapping key's TripleDES, kept with the key (the master key wraps and unwraps every
    ExtToken object)."""
    return remembered(key, "des3", lambda attrs: des.cipher(attrs[C.CKA_VALUE]))


_PKCS7 = padding.PKCS7(64)   # holds only the block size: its padders and unpadders are new per call


def _des3_cbc_pad(des3, iv, data, encrypt):
    algorithm = Cipher(des3, modes.CBC(iv))
    if encrypt:
        padder = _PKCS7.padder()
        ctx = algorithm.encryptor()
        return ctx.update(padder.update(data) + padder.finalize()) + ctx.finalize()
    ctx, unpadder = algorithm.decryptor(), _PKCS7.unpadder()
    plain = ctx.update(data) + ctx.finalize()       # ValueError if not whole blocks
    return unpadder.update(plain) + unpadder.finalize()  # ValueError on bad padding


_NO_MAC_KEY = bytes(MAC_KEY_LEN)


def _mac(key, data):
    ctx = cmac.CMAC(des.cipher(key))
    ctx.update(data)
    return ctx


class WrapKey:
    def wrap(self, row, wrapping_key, param, attrs):
        clear, secret = split(attrs)
        mac_key, iv = des.random_key(MAC_KEY_LEN), os.urandom(des.BLOCK)
        inner = field(mac_key) + field(secret)
        encrypted = _des3_cbc_pad(_des3(wrapping_key), iv, inner, encrypt=True)
        body = field(VERSION) + field(iv) + field(encrypted) + field(clear)
        return body + field(_mac(mac_key, body).finalize())

    def unwrap(self, row, key, param, wrapped):
        try:
            version, iv, encrypted, clear_block, tag = fields(wrapped, 5)
        except Malformed:
            raise CKRError(C.CKR_SIGNATURE_INVALID, "wrapped object does not verify") from None
        mac_key, secret_block = _open_e(key, iv, encrypted)
        # E is CBC, unauthenticated until the MAC: whatever it decrypted to, the same MAC is
        # computed and compared before the answer, or bad padding answered early would be an
        # oracle on cK (the outer framing and the version are not secret: no need to hide them).
        good = hmac.compare_digest(_mac(mac_key, signed_part(wrapped, tag)).finalize(), tag)
        if not good or secret_block is None or version != VERSION:
            raise CKRError(C.CKR_SIGNATURE_INVALID, "wrapped object does not verify")
        # Authenticated from here: what fails now was built wrong, not changed in transit.
        return decode_object(clear_block, secret_block)


def _open_e(key, iv, encrypted):
    """E -> (mK, the secret block), or (a key of no cryptogram, None) if E does not decrypt
    to a well-formed mK, cK."""
    try:
        mac_key, secret_block = fields(_des3_cbc_pad(_des3(key), iv, encrypted, encrypt=False), 2)
    except (Malformed, ValueError):   # bad IV length, not whole blocks, bad padding or framing
        return _NO_MAC_KEY, None
    if len(mac_key) != MAC_KEY_LEN:
        return _NO_MAC_KEY, None
    return mac_key, secret_block


register(Row(C.CKM_WRAPKEY_DES3_CBC, WrapKey(), C.CKF_WRAP | C.CKF_UNWRAP, des.KEY_TYPES, 16, 24,
             info={"object": True}))
