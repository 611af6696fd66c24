"""CKM_WRAPKEY_DES3_CBC, the PTK-C whole-object wrap (docs/wrapkey-des3-cbc.md), through
the real .so: objects of every class come back with the same attributes and no template;
the cryptogram has the documented layout (decoded here independently, with
`cryptography`); any changed bit is CKR_SIGNATURE_INVALID, never another object.

The mechanism has no published vectors; its primitives do (TDES-CBC: CAVP TCBCMMT*,
TDEA-CMAC: SP 800-38B, in test_symmetric.py), and the layout is checked against the
document by an independent decoder below.
"""

import struct

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import cmac, padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from pkcs11 import Attribute, KeyType, ObjectClass

from ptkhsm import constants as C

from . import raw
from .conftest import raw_rv, rsa_from_crypto
from .symkeys import create, secret, unwrap

WRAPKEY = C.CKM_WRAPKEY_DES3_CBC
WK_VALUE = bytes.fromhex("0123456789abcdeffedcba987654321089abcdef01234567")

# What C_GetAttributeValue shows of a secret key, to compare before and after.
SECRET_ATTRS = (C.CKA_CLASS, C.CKA_KEY_TYPE, C.CKA_TOKEN, C.CKA_PRIVATE, C.CKA_MODIFIABLE, C.CKA_COPYABLE,
                C.CKA_DESTROYABLE, C.CKA_LABEL, C.CKA_ID, C.CKA_START_DATE, C.CKA_END_DATE, C.CKA_DERIVE,
                C.CKA_LOCAL, C.CKA_KEY_GEN_MECHANISM, C.CKA_ALLOWED_MECHANISMS, C.CKA_SENSITIVE,
                C.CKA_ENCRYPT, C.CKA_DECRYPT, C.CKA_SIGN, C.CKA_VERIFY, C.CKA_WRAP, C.CKA_UNWRAP,
                C.CKA_EXTRACTABLE, C.CKA_ALWAYS_SENSITIVE, C.CKA_NEVER_EXTRACTABLE, C.CKA_CHECK_VALUE,
                C.CKA_WRAP_WITH_TRUSTED, C.CKA_TRUSTED, C.CKA_VALUE_LEN, C.CKA_VALUE)


@pytest.fixture(scope="module")
def wk(s):
    """The wrapping key: a DES3 key of known value (so the tests can decode cryptograms)."""
    return secret(s, KeyType.DES3, WK_VALUE, WRAP=True, UNWRAP=True, ENCRYPT=False, DECRYPT=False)


def _attrs(session, handle, types):
    out = {}
    for attr in types:
        try:
            out[attr] = raw.attribute(session, handle, attr)
        except raw.CKR as exc:
            out[attr] = exc.rv  # e.g. CKR_ATTRIBUTE_SENSITIVE: must be the same after
    return out


def _roundtrip(session, wk, handle, template=None):
    wrapped = raw.wrap(session, WRAPKEY, None, wk.handle, handle)
    return wrapped, unwrap(session, WRAPKEY, None, wk.handle, wrapped, template)


# -- an independent decoder of docs/wrapkey-des3-cbc.md ---------------------------------------
def _fields(data, count):
    out, pos = [], 0
    for _ in range(count):
        (n,) = struct.unpack_from(">I", data, pos)
        out.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    assert pos == len(data)
    return out


def _block(data):
    (count,) = struct.unpack_from(">I", data, 0)
    pos, out = 4, {}
    for _ in range(count):
        attr_type, length, present = struct.unpack_from(">IIB", data, pos)
        pos += 9
        out[attr_type] = data[pos:pos + length] if present else None
        pos += length
    assert pos == len(data)
    return out


def _decode(wrapped, wk_value):
    version, iv, encrypted, a, tag = _fields(wrapped, 5)
    assert version == b"\x01" and len(iv) == 8
    decryptor = Cipher(TripleDES(wk_value), modes.CBC(iv)).decryptor()
    unpadder = padding.PKCS7(64).unpadder()
    inner = unpadder.update(decryptor.update(encrypted) + decryptor.finalize()) + unpadder.finalize()
    mac_key, ck = _fields(inner, 2)
    mac = cmac.CMAC(TripleDES(mac_key + mac_key[:8]))
    mac.update(wrapped[:len(wrapped) - 4 - len(tag)])
    mac.verify(tag)
    return mac_key, _block(a), _block(ck)


def _encode(clear, secret, wk_value, mac_key=bytes(range(16)), iv=bytes(8)):
    """A cryptogram made here from the document alone: {type: raw value}, sensitive ones apart."""
    def block(entries):
        return struct.pack(">I", len(entries)) + b"".join(
            struct.pack(">IIB", t, len(v or b""), v is not None) + (v or b"") for t, v in sorted(entries.items()))

    def field(x):
        return struct.pack(">I", len(x)) + x

    padder = padding.PKCS7(64).padder()
    inner = padder.update(field(mac_key) + field(block(secret))) + padder.finalize()
    encryptor = Cipher(TripleDES(wk_value), modes.CBC(iv)).encryptor()
    a = block({**clear, **{t: None for t in secret}})
    body = field(b"\x01") + field(iv) + field(encryptor.update(inner) + encryptor.finalize()) + field(a)
    mac = cmac.CMAC(TripleDES(mac_key + mac_key[:8]))
    mac.update(body)
    return body + field(mac.finalize())


def _ulong(value):
    return struct.pack("<Q", value)


# -- round trips --------------------------------------------------------------------------------
def test_secret_key_roundtrip(s, wk):
    """A generated, labelled, restricted AES key comes back with every attribute equal,
    CKA_LOCAL and the generation history included, from a template-less C_UnwrapKey."""
    key = s.generate_key(KeyType.AES, 256, label="subject", id=b"\1\2", template={
        Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True, Attribute.DERIVE: True,
        Attribute.SIGN: False})
    before = _attrs(s, key.handle, SECRET_ATTRS)
    assert before[C.CKA_LOCAL] == b"\1"
    _, restored = _roundtrip(s, wk, key.handle)
    assert restored != key.handle
    assert _attrs(s, restored, SECRET_ATTRS) == before


def test_sensitive_key_roundtrip(s, wk):
    """A sensitive (extractable) key: its value stays hidden after, and it computes the same."""
    key = secret(s, KeyType.AES, bytes(range(16)), SENSITIVE=True, LABEL="sensitive")
    _, restored = _roundtrip(s, wk, key.handle)
    assert _attrs(s, restored, SECRET_ATTRS) == _attrs(s, key.handle, SECRET_ATTRS)
    with raw_rv(C.CKR_ATTRIBUTE_SENSITIVE):
        raw.attribute(s, restored, C.CKA_VALUE)
    plain = bytes(32)
    out = raw.sign(s, C.CKM_AES_CMAC, None, restored, plain)
    assert out == raw.sign(s, C.CKM_AES_CMAC, None, key.handle, plain)


def test_templates_roundtrip(s, wk):
    """Template attributes (CKA_WRAP_TEMPLATE, CKA_UNWRAP_TEMPLATE), mechanism lists, dates survive."""
    handle = create(s, {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.DES2,
                        Attribute.VALUE: bytes(range(16)), Attribute.TOKEN: False, Attribute.EXTRACTABLE: True,
                        Attribute.SENSITIVE: False, Attribute.WRAP: True, Attribute.START_DATE: b"20240101",
                        Attribute.ALLOWED_MECHANISMS: struct.pack("<QQ", C.CKM_DES3_CBC, C.CKM_WRAPKEY_DES3_CBC),
                        Attribute.WRAP_TEMPLATE: {Attribute.KEY_TYPE: KeyType.AES, Attribute.EXTRACTABLE: True},
                        Attribute.UNWRAP_TEMPLATE: {Attribute.SENSITIVE: True}})
    wrapped, restored = _roundtrip(s, wk, handle)
    types = SECRET_ATTRS + (C.CKA_WRAP_TEMPLATE, C.CKA_UNWRAP_TEMPLATE)
    assert _attrs(s, restored, types) == _attrs(s, handle, types)
    _, a, _ = _decode(wrapped, WK_VALUE)
    nested = _block(a[C.CKA_WRAP_TEMPLATE])
    assert nested == {C.CKA_KEY_TYPE: struct.pack("<Q", C.CKK_AES), C.CKA_EXTRACTABLE: b"\1"}


def test_other_classes_roundtrip(s, wk):
    """Private and public RSA keys, a data object and a certificate-less public key: any class."""
    crypto_key = rsa.generate_private_key(65537, 2048)
    private, public = rsa_from_crypto(s, crypto_key, extra={Attribute.EXTRACTABLE: True,
                                                            Attribute.SENSITIVE: False})
    data = s.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.VALUE: b"payload", Attribute.TOKEN: False,
                            Attribute.APPLICATION: "ptkhsm", Attribute.LABEL: "data"})
    private_attrs = (C.CKA_CLASS, C.CKA_KEY_TYPE, C.CKA_MODULUS, C.CKA_PUBLIC_EXPONENT, C.CKA_PRIVATE_EXPONENT,
                     C.CKA_PRIME_1, C.CKA_PRIME_2, C.CKA_EXPONENT_1, C.CKA_EXPONENT_2, C.CKA_COEFFICIENT,
                     C.CKA_SIGN, C.CKA_DECRYPT, C.CKA_EXTRACTABLE, C.CKA_SENSITIVE, C.CKA_PRIVATE)
    public_attrs = (C.CKA_CLASS, C.CKA_KEY_TYPE, C.CKA_MODULUS, C.CKA_PUBLIC_EXPONENT, C.CKA_VERIFY,
                    C.CKA_ENCRYPT, C.CKA_WRAP, C.CKA_PRIVATE, C.CKA_MODULUS_BITS)
    data_attrs = (C.CKA_CLASS, C.CKA_VALUE, C.CKA_APPLICATION, C.CKA_LABEL, C.CKA_PRIVATE, C.CKA_TOKEN)
    for obj, types in ((private, private_attrs), (public, public_attrs), (data, data_attrs)):
        wrapped, restored = _roundtrip(s, wk, obj.handle)
        assert _attrs(s, restored, types) == _attrs(s, obj.handle, types)
        _, a, ck = _decode(wrapped, WK_VALUE)
        # the documented split: key material encrypted, listed as absent in the clear block
        assert all(a[t] is None for t in ck) and all(a[t] is not None for t in a if t not in ck)
        if obj is private:
            assert set(ck) == {C.CKA_PRIVATE_EXPONENT, C.CKA_PRIME_1, C.CKA_PRIME_2, C.CKA_EXPONENT_1,
                               C.CKA_EXPONENT_2, C.CKA_COEFFICIENT}
        if obj is data:
            assert ck == {C.CKA_VALUE: b"payload"} and a[C.CKA_LABEL] == b"data"


def test_documented_layout(s, wk):
    """The cryptogram decodes as docs/wrapkey-des3-cbc.md says: version, IV, E(mK, cK), a, CMAC tag;
    mK is a fresh odd-parity DES2 key; cK holds CKA_VALUE, a lists it as absent, in type order."""
    value = bytes(range(32))
    key = secret(s, KeyType.AES, value, LABEL="layout")
    wrapped_1 = raw.wrap(s, WRAPKEY, None, wk.handle, key.handle)
    wrapped_2 = raw.wrap(s, WRAPKEY, None, wk.handle, key.handle)
    assert wrapped_1 != wrapped_2  # random IV and MAC key
    mac_key, a, ck = _decode(wrapped_1, WK_VALUE)
    assert len(mac_key) == 16 and all(bin(b).count("1") % 2 for b in mac_key)
    assert ck == {C.CKA_VALUE: value}
    assert a[C.CKA_VALUE] is None and a[C.CKA_LABEL] == b"layout"
    assert a[C.CKA_CLASS] == struct.pack("<Q", C.CKO_SECRET_KEY) and a[C.CKA_ENCRYPT] == b"\1"
    count = struct.unpack_from(">I", _fields(wrapped_1, 5)[3])[0]
    assert count == len(a) and list(a) == sorted(a)


def test_template_changes_like_copy(s, wk):
    """The unwrap template changes what C_CopyObject could change (label, token-ness, usage);
    it cannot make a sensitive key readable nor change the class."""
    key = secret(s, KeyType.AES, bytes(16), SENSITIVE=True, LABEL="original")
    wrapped = raw.wrap(s, WRAPKEY, None, wk.handle, key.handle)
    restored = unwrap(s, WRAPKEY, None, wk.handle, wrapped, {Attribute.LABEL: b"renamed", Attribute.ENCRYPT: False})
    assert raw.attribute(s, restored, C.CKA_LABEL) == b"renamed"
    assert raw.attribute(s, restored, C.CKA_ENCRYPT) == b"\0"
    with raw_rv(C.CKR_ATTRIBUTE_READ_ONLY):
        unwrap(s, WRAPKEY, None, wk.handle, wrapped, {Attribute.SENSITIVE: False})
    with raw_rv(C.CKR_ATTRIBUTE_READ_ONLY):
        unwrap(s, WRAPKEY, None, wk.handle, wrapped, {Attribute.CLASS: ObjectClass.DATA})


def test_cryptogram_made_from_the_document(s, wk):
    """A cryptogram built by the independent encoder above unwraps to the object it describes;
    one that is authentic but describes no valid object is CKR_WRAPPED_KEY_INVALID."""
    clear = {C.CKA_CLASS: _ulong(C.CKO_SECRET_KEY), C.CKA_KEY_TYPE: _ulong(C.CKK_AES), C.CKA_TOKEN: b"\0",
             C.CKA_PRIVATE: b"\1", C.CKA_LABEL: b"outside", C.CKA_ENCRYPT: b"\1", C.CKA_EXTRACTABLE: b"\1",
             C.CKA_SENSITIVE: b"\0"}
    value = bytes(range(16))
    handle = unwrap(s, WRAPKEY, None, wk.handle, _encode(clear, {C.CKA_VALUE: value}, WK_VALUE))
    assert raw.attribute(s, handle, C.CKA_VALUE) == value
    assert raw.attribute(s, handle, C.CKA_LABEL) == b"outside"
    assert raw.attribute(s, handle, C.CKA_VALUE_LEN) == _ulong(16)
    for bad_clear, bad_secret in (
            ({**clear, C.CKA_MODULUS: b"\1"}, {C.CKA_VALUE: value}),     # an attribute AES keys lack
            (clear, {C.CKA_VALUE: value[:15]}),                           # no AES key length
            ({**clear, C.CKA_KEY_TYPE: _ulong(0x7FFF)}, {C.CKA_VALUE: value}),  # unknown key type
            ({**clear, C.CKA_TOKEN: b"\0\0"}, {C.CKA_VALUE: value}),        # a CK_BBOOL of 2 bytes
    ):
        with raw_rv(C.CKR_WRAPPED_KEY_INVALID):
            unwrap(s, WRAPKEY, None, wk.handle, _encode(bad_clear, bad_secret, WK_VALUE))


def test_a_cryptogram_claiming_a_never_extractable_key_is_refused(s, wk):
    """Whoever knows an unwrapping key can MAC any object: one claiming CKA_NEVER_EXTRACTABLE
    (which no wrappable key has) would give a key of known value that says it never left an
    HSM. The same cryptogram without the claim unwraps, so the refusal is for the claim."""
    clear = {C.CKA_CLASS: _ulong(C.CKO_SECRET_KEY), C.CKA_KEY_TYPE: _ulong(C.CKK_AES), C.CKA_TOKEN: b"\0",
             C.CKA_SENSITIVE: b"\1", C.CKA_EXTRACTABLE: b"\0", C.CKA_ALWAYS_SENSITIVE: b"\1"}
    value = bytes(range(16))
    with raw_rv(C.CKR_WRAPPED_KEY_INVALID):
        unwrap(s, WRAPKEY, None, wk.handle, _encode({**clear, C.CKA_NEVER_EXTRACTABLE: b"\1"},
                                                    {C.CKA_VALUE: value}, WK_VALUE))
    handle = unwrap(s, WRAPKEY, None, wk.handle, _encode({**clear, C.CKA_NEVER_EXTRACTABLE: b"\0"},
                                                         {C.CKA_VALUE: value}, WK_VALUE))
    assert raw.attribute(s, handle, C.CKA_NEVER_EXTRACTABLE) == b"\0"
    # What the cryptogram lacks (it was an internal error for CKA_PRIVATE) is a new object's
    # default, and an unwrapped key's history.
    assert raw.attribute(s, handle, C.CKA_PRIVATE) == b"\1"
    assert raw.attribute(s, handle, C.CKA_LOCAL) == b"\0"
    assert raw.attribute(s, handle, C.CKA_KEY_GEN_MECHANISM) == _ulong(C.CK_UNAVAILABLE_INFORMATION)


def test_a_cryptogram_lacking_any_one_attribute_is_an_object_or_refused(s, wk):
    """Authentic cryptograms of each class (an AES key, RSA private and public keys, a data
    object), each attribute left out in turn: the unwrap makes an object or answers
    CKR_WRAPPED_KEY_INVALID, never an internal error (leaving out CKA_PRIVATE was one)."""
    crypto_key = rsa.generate_private_key(65537, 2048)
    private, public = rsa_from_crypto(s, crypto_key, extra={Attribute.EXTRACTABLE: True})
    aes = secret(s, KeyType.AES, bytes(range(16)), LABEL="any")
    data = s.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.VALUE: b"payload",
                            Attribute.TOKEN: False, Attribute.LABEL: "data"})
    outcomes = set()
    for obj in (aes, private, public, data):
        _, a, ck = _decode(raw.wrap(s, WRAPKEY, None, wk.handle, obj.handle), WK_VALUE)
        clear = {t: v for t, v in a.items() if v is not None}
        for left_out in list(clear) + list(ck):
            try:
                unwrap(s, WRAPKEY, None, wk.handle, _encode(
                    {t: v for t, v in clear.items() if t != left_out},
                    {t: v for t, v in ck.items() if t != left_out}, WK_VALUE))
                outcomes.add(C.CKR_OK)
            except raw.CKR as exc:
                assert exc.rv == C.CKR_WRAPPED_KEY_INVALID, (obj, hex(left_out), hex(exc.rv))
                outcomes.add(exc.rv)
    assert outcomes == {C.CKR_OK, C.CKR_WRAPPED_KEY_INVALID}


# Values a key holder could MAC in place of any attribute's: empty, each CK_BBOOL, CK_ULONGs
# (0, 1, all ones, a 32-bit one), bytes of a wrong length, and a long string.
_CHANGED_VALUES = (b"", b"\0", b"\1", b"\x02", _ulong(0), _ulong(1), _ulong(2 ** 64 - 1), _ulong(0xFFFFFFFF),
                   struct.pack("<I", 1), bytes(3), b"\xff" * 300)
# What an unwrap of such a cryptogram may answer besides an object: the cryptogram's own
# fault, or the attribute policy any new object passes (CKA_TRUSTED TRUE only for the SO,
# docs/wrapkey-des3-cbc.md: a user forging it would have a trusted wrapping key of known value).
_REFUSALS = {C.CKR_WRAPPED_KEY_INVALID, C.CKR_TEMPLATE_INCONSISTENT, C.CKR_ATTRIBUTE_VALUE_INVALID,
             C.CKR_ATTRIBUTE_READ_ONLY}
# ... and what its use may answer: usage, allowed mechanisms, key type, CKA_ALWAYS_AUTHENTICATE.
_USE_REFUSALS = {C.CKR_KEY_FUNCTION_NOT_PERMITTED, C.CKR_MECHANISM_INVALID, C.CKR_KEY_TYPE_INCONSISTENT,
                 C.CKR_USER_NOT_LOGGED_IN}


def test_a_cryptogram_with_any_one_value_changed_is_an_object_or_refused(s, wk):
    """Authentic cryptograms of each class with each attribute's value replaced in turn by
    each of _CHANGED_VALUES: the unwrap refuses with a _REFUSALS code or makes an object
    whose every attribute can be read (or is refused per attribute) and, a key, signs or
    is refused by its attributes; never an internal error or a crash. (1,144 unwraps in
    all: 744 refused as invalid, 396 objects, 4 forged CKA_TRUSTED.)"""
    crypto_key = rsa.generate_private_key(65537, 2048)
    private, public = rsa_from_crypto(s, crypto_key, extra={Attribute.EXTRACTABLE: True})
    aes = secret(s, KeyType.AES, bytes(range(16)), LABEL="any")
    data = s.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.VALUE: b"payload",
                            Attribute.TOKEN: False, Attribute.LABEL: "data"})
    outcomes = {}
    for obj in (aes, private, public, data):
        _, a, ck = _decode(raw.wrap(s, WRAPKEY, None, wk.handle, obj.handle), WK_VALUE)
        clear = {t: v for t, v in a.items() if v is not None}
        for changed in list(clear) + list(ck):
            for value in _CHANGED_VALUES:
                where = (obj, hex(changed), value[:8].hex())
                try:
                    handle = unwrap(s, WRAPKEY, None, wk.handle, _encode(
                        {t: (value if t == changed else v) for t, v in clear.items()},
                        {t: (value if t == changed else v) for t, v in ck.items()}, WK_VALUE))
                except raw.CKR as exc:
                    assert exc.rv in _REFUSALS, (*where, hex(exc.rv))
                    outcomes[exc.rv] = outcomes.get(exc.rv, 0) + 1
                    continue
                outcomes[C.CKR_OK] = outcomes.get(C.CKR_OK, 0) + 1
                if obj in (private, aes):   # a key made signs, or its attributes forbid it
                    try:
                        raw.sign(s, C.CKM_SHA256_RSA_PKCS if obj is private else C.CKM_AES_CMAC, None, handle, b"x")
                    except raw.CKR as exc:
                        assert exc.rv in _USE_REFUSALS, (*where, hex(exc.rv))
                for attr in set(clear) | set(ck):
                    try:
                        raw.attribute(s, handle, attr)
                    except raw.CKR as exc:
                        assert exc.rv in (C.CKR_ATTRIBUTE_SENSITIVE, C.CKR_ATTRIBUTE_TYPE_INVALID), \
                            (*where, hex(attr), hex(exc.rv))
                try:
                    raw.destroy(s, handle)
                except raw.CKR as exc:   # the cryptogram said CKA_DESTROYABLE FALSE
                    assert exc.rv == C.CKR_ACTION_PROHIBITED, (*where, hex(exc.rv))
    assert C.CKR_OK in outcomes and C.CKR_WRAPPED_KEY_INVALID in outcomes, outcomes


# -- tampering and bad parameters ------------------------------------------------------------
def test_every_changed_bit_is_signature_invalid(s, wk):
    """One bit flipped in each byte of the cryptogram (lengths, IV, E, attributes, tag), and
    cut or extended cryptograms: always CKR_SIGNATURE_INVALID, never an object."""
    key = secret(s, KeyType.DES2, bytes(range(16)), LABEL="tamper")
    wrapped = raw.wrap(s, WRAPKEY, None, wk.handle, key.handle)
    candidates = [bytes(wrapped[:i]) + bytes([wrapped[i] ^ (1 << (i % 8))]) + bytes(wrapped[i + 1:])
                  for i in range(len(wrapped))]
    candidates += [wrapped[:-1], wrapped + b"\0", wrapped[:len(wrapped) // 2], b""]
    for tampered in candidates:
        with raw_rv(C.CKR_SIGNATURE_INVALID):
            unwrap(s, WRAPKEY, None, wk.handle, tampered)
    assert unwrap(s, WRAPKEY, None, wk.handle, wrapped)  # and the original still unwraps


def test_other_wrapping_key(s, wk):
    key = secret(s, KeyType.AES, bytes(16))
    wrapped = raw.wrap(s, WRAPKEY, None, wk.handle, key.handle)
    other = secret(s, KeyType.DES3, WK_VALUE[:23] + bytes([WK_VALUE[23] ^ 2]), UNWRAP=True)
    with raw_rv(C.CKR_SIGNATURE_INVALID):
        unwrap(s, WRAPKEY, None, other.handle, wrapped)


def test_wrapkey_bad_parameters(s, wk):
    key = secret(s, KeyType.AES, bytes(16))
    with raw_rv(C.CKR_MECHANISM_PARAM_INVALID):  # no parameter
        raw.wrap(s, WRAPKEY, bytes(8), wk.handle, key.handle)
    aes_kek = secret(s, KeyType.AES, bytes(16), WRAP=True)
    with raw_rv(C.CKR_WRAPPING_KEY_TYPE_INCONSISTENT):
        raw.wrap(s, WRAPKEY, None, aes_kek.handle, key.handle)
    no_wrap = secret(s, KeyType.DES3, WK_VALUE, WRAP=False, UNWRAP=False)
    with raw_rv(C.CKR_KEY_FUNCTION_NOT_PERMITTED):
        raw.wrap(s, WRAPKEY, None, no_wrap.handle, key.handle)
    wrapped = raw.wrap(s, WRAPKEY, None, wk.handle, key.handle)
    with raw_rv(C.CKR_KEY_FUNCTION_NOT_PERMITTED):
        unwrap(s, WRAPKEY, None, no_wrap.handle, wrapped)
    locked = secret(s, KeyType.AES, bytes(16), EXTRACTABLE=False, SENSITIVE=True)
    with raw_rv(C.CKR_KEY_UNEXTRACTABLE):
        raw.wrap(s, WRAPKEY, None, wk.handle, locked.handle)
    with raw_rv(C.CKR_MECHANISM_INVALID):  # a wrapping mechanism only: no C_Encrypt with it
        raw.init("C_EncryptInit", s, WRAPKEY, None, wk.handle)
    flags = raw.mechanism_info(s.token.slot.slot_id, WRAPKEY)[2]
    assert flags & C.CKF_WRAP and flags & C.CKF_UNWRAP and not flags & C.CKF_ENCRYPT
