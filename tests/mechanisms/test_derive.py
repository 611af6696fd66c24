"""C_DeriveKey with the simple derivations, through the real .so: SHA*_KEY_DERIVATION,
CONCATENATE_BASE_AND_KEY / _BASE_AND_DATA / _DATA_AND_BASE, XOR_BASE_AND_DATA and
AES/DES3 _ECB/_CBC_ENCRYPT_DATA; the key type and length rules and the attributes the
derived key inherits (PKCS#11 v2.40, common to all of them).

Vectors: FIPS 180-2 appendix examples ("abc") and NIST CAVP SHA ShortMsg (the digest of
the base key is the derived key), NIST SP 800-38A F.1.1/F.2.1 (AES-ECB/CBC), NIST CAVP
TECBMMT3/TCBCMMT3 (TDES). The concatenation and XOR mechanisms have no published vectors
beyond their definition; they are checked byte for byte against it, with the inputs of
kryoptic's tests/simplekdf.rs.
"""

import hashlib

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from ptkhsm import constants as C

from . import raw
from .conftest import raw_rv
from .symkeys import create, des_cbc_data, secret, string_data, ulong
from .test_symmetric import _odd_parity, _tdes_records
from .vectors import hexbytes, load_nist

READABLE = {Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True}
SECRET = {Attribute.CLASS: ObjectClass.SECRET_KEY}

# FIPS 180-2 appendix A-C / FIPS 180-4 examples: digest of "abc"
ABC = {
    Mechanism.SHA1_KEY_DERIVATION: "a9993e364706816aba3e25717850c26c9cd0d89d",
    Mechanism.SHA224_KEY_DERIVATION: "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7",
    Mechanism.SHA256_KEY_DERIVATION: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    Mechanism.SHA384_KEY_DERIVATION: "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded163"
                                     "1a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7",
    Mechanism.SHA512_KEY_DERIVATION: "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                                     "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
}
CAVP = {Mechanism.SHA1_KEY_DERIVATION: ("SHA1", "SHA1"), Mechanism.SHA224_KEY_DERIVATION: ("SHA2", "SHA224"),
        Mechanism.SHA256_KEY_DERIVATION: ("SHA2", "SHA256"), Mechanism.SHA384_KEY_DERIVATION: ("SHA2", "SHA384"),
        Mechanism.SHA512_KEY_DERIVATION: ("SHA2", "SHA512")}


def _base(session, value, key_type=KeyType.GENERIC_SECRET, **attrs):
    return secret(session, key_type, value, DERIVE=True, **attrs)


def _value(session, handle):
    return raw.attribute(session, handle, C.CKA_VALUE)


def _ulong_attr(session, handle, attr):
    return int.from_bytes(raw.attribute(session, handle, attr), "little")


@pytest.mark.parametrize("mechanism", list(ABC), ids=[m.name for m in ABC])
def test_sha_key_derivation(s, mechanism):
    """The derived key is the digest of the base key's value: FIPS 180 "abc" and CAVP
    ShortMsg vectors; without a template length it is a generic secret of the whole digest."""
    digest = bytes.fromhex(ABC[mechanism])
    base = _base(s, b"abc")
    key = raw.derive(s, mechanism, None, base.handle, {**SECRET, **READABLE})
    assert _value(s, key) == digest
    assert _ulong_attr(s, key, C.CKA_KEY_TYPE) == C.CKK_GENERIC_SECRET
    assert _ulong_attr(s, key, C.CKA_VALUE_LEN) == len(digest)
    records = [r for r in load_nist("hashes", *CAVP[mechanism][:1], f"{CAVP[mechanism][1]}ShortMsg.rsp")
               if "MD" in r and int(r["Len"]) and int(r["Len"]) % 8 == 0]
    assert len(records) >= 64
    for r in records[::16]:
        base = _base(s, hexbytes(r["Msg"]))
        derived = base.derive_key(KeyType.GENERIC_SECRET, 16 * 8, mechanism=mechanism, template=READABLE)
        assert derived[Attribute.VALUE] == bytes.fromhex(r["MD"])[:16]


def test_sha_key_derivation_des_and_aes(s):
    """A DES3 key takes 24 bytes of the digest with odd parity, without being told a length;
    an AES key needs CKA_VALUE_LEN; no key longer than the digest."""
    digest = bytes.fromhex(ABC[Mechanism.SHA256_KEY_DERIVATION])
    base = _base(s, b"abc")
    des3 = raw.derive(s, C.CKM_SHA256_KEY_DERIVATION, None, base.handle,
                      {**SECRET, **READABLE, Attribute.KEY_TYPE: KeyType.DES3})
    value = _value(s, des3)
    assert len(value) == 24 and _odd_parity(value)
    assert bytes(b & 0xFE for b in value) == bytes(b & 0xFE for b in digest[:24])
    aes = base.derive_key(KeyType.AES, 128, mechanism=Mechanism.SHA256_KEY_DERIVATION, template=READABLE)
    assert aes[Attribute.VALUE] == digest[:16]
    with raw_rv(C.CKR_TEMPLATE_INCOMPLETE):
        raw.derive(s, C.CKM_SHA256_KEY_DERIVATION, None, base.handle, {**SECRET, Attribute.KEY_TYPE: KeyType.AES})
    with pytest.raises(pkcs11.TemplateInconsistent):  # SHA-1 gives 20 bytes
        base.derive_key(KeyType.AES, 256, mechanism=Mechanism.SHA1_KEY_DERIVATION)
    with pytest.raises(pkcs11.TemplateInconsistent):  # a DES2 key is 16 bytes
        base.derive_key(KeyType.DES2, 192, mechanism=Mechanism.SHA256_KEY_DERIVATION)
    with pytest.raises(pkcs11.MechanismParamInvalid):
        base.derive_key(KeyType.AES, 128, mechanism=Mechanism.SHA256_KEY_DERIVATION, mechanism_param=b"x")


def test_concatenate_base_and_key(s):
    base = _base(s, bytes.fromhex("01234567"))
    other = secret(s, KeyType.GENERIC_SECRET, bytes.fromhex("89abcdef"))
    key = raw.derive(s, C.CKM_CONCATENATE_BASE_AND_KEY, ulong(other.handle), base.handle, {**SECRET, **READABLE})
    assert _value(s, key) == bytes.fromhex("0123456789abcdef")
    short = base.derive_key(KeyType.GENERIC_SECRET, 48, mechanism=Mechanism.CONCATENATE_BASE_AND_KEY,
                            mechanism_param=ulong(other.handle), template=READABLE)
    assert short[Attribute.VALUE] == bytes.fromhex("0123456789ab")
    with pytest.raises(pkcs11.KeyHandleInvalid):
        base.derive_key(KeyType.GENERIC_SECRET, 32, mechanism=Mechanism.CONCATENATE_BASE_AND_KEY,
                        mechanism_param=ulong(0x7FFFFFF))
    data = s.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.VALUE: b"x", Attribute.TOKEN: False})
    with pytest.raises(pkcs11.KeyTypeInconsistent):
        base.derive_key(KeyType.GENERIC_SECRET, 32, mechanism=Mechanism.CONCATENATE_BASE_AND_KEY,
                        mechanism_param=ulong(data.handle))


@pytest.mark.parametrize("ckm, expected", [
    (C.CKM_CONCATENATE_BASE_AND_DATA, "0123456789abcdef"),
    (C.CKM_CONCATENATE_DATA_AND_BASE, "89abcdef01234567"),
    (C.CKM_XOR_BASE_AND_DATA, "88888888"),
])
def test_base_and_data(s, ckm, expected):
    base = _base(s, bytes.fromhex("01234567"))
    param, keep = string_data(bytes.fromhex("89abcdef"))
    key = raw.derive(s, ckm, param, base.handle, {**SECRET, **READABLE})
    assert _value(s, key) == bytes.fromhex(expected)
    # a shorter key takes the leftmost bytes; XOR is as long as the shorter input
    param, keep = string_data(bytes.fromhex("89abcdef00"))
    key = raw.derive(s, ckm, param, base.handle, {**SECRET, **READABLE, Attribute.VALUE_LEN: 3})
    assert _value(s, key) == bytes.fromhex(expected)[:3]
    with raw_rv(C.CKR_TEMPLATE_INCONSISTENT):
        raw.derive(s, ckm, param, base.handle, {**SECRET, Attribute.VALUE_LEN: 10})
    empty, keep = string_data(b"")
    with raw_rv(C.CKR_MECHANISM_PARAM_INVALID):
        raw.derive(s, ckm, empty, base.handle, dict(SECRET))
    with raw_rv(C.CKR_MECHANISM_PARAM_INVALID):  # a bare CK_ULONG is not CK_KEY_DERIVATION_STRING_DATA
        raw.derive(s, ckm, ulong(4), base.handle, dict(SECRET))


def test_aes_encrypt_data(s):
    """SP 800-38A: ECB-AES128 F.1.1 block 1 and CBC-AES128 F.2.1 blocks 1-2."""
    base = _base(s, bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c"), KeyType.AES)
    block1 = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    block2 = bytes.fromhex("ae2d8a571e03ac9c9eb76fac45af8e51")
    ecb = base.derive_key(KeyType.AES, 128, mechanism=Mechanism.AES_ECB_ENCRYPT_DATA, mechanism_param=block1,
                          template=READABLE)
    assert ecb[Attribute.VALUE] == bytes.fromhex("3ad77bb40d7a3660a89ecaf32466ef97")
    iv = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    cbc = base.derive_key(KeyType.AES, 256, mechanism=Mechanism.AES_CBC_ENCRYPT_DATA,
                          mechanism_param=(iv, block1 + block2), template=READABLE)
    assert cbc[Attribute.VALUE] == bytes.fromhex("7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2")
    with pytest.raises(pkcs11.MechanismParamInvalid):
        base.derive_key(KeyType.AES, 128, mechanism=Mechanism.AES_ECB_ENCRYPT_DATA, mechanism_param=block1[:15])
    with pytest.raises(pkcs11.MechanismParamInvalid):  # 16 bytes of data make no 32-byte key
        base.derive_key(KeyType.AES, 256, mechanism=Mechanism.AES_ECB_ENCRYPT_DATA, mechanism_param=block1)
    param, keep = des_cbc_data(iv[:8], block1)   # an 8-byte IV (the DES struct) for AES
    with raw_rv(C.CKR_MECHANISM_PARAM_INVALID):
        raw.derive(s, C.CKM_AES_CBC_ENCRYPT_DATA, param, base.handle, {**SECRET, Attribute.VALUE_LEN: 16})
    des = _base(s, bytes(range(24)), KeyType.DES3)
    with pytest.raises(pkcs11.KeyTypeInconsistent):
        des.derive_key(KeyType.AES, 128, mechanism=Mechanism.AES_ECB_ENCRYPT_DATA, mechanism_param=block1)


def test_des3_encrypt_data(s):
    """CAVP TDES three-key vectors with 24-byte plaintexts: the ciphertext is the derived
    value (a DES3 key gets odd parity on top)."""
    for mode, name, ckm in (("ECB", "TECBMMT3.rsp", C.CKM_DES3_ECB_ENCRYPT_DATA),
                            ("CBC", "TCBCMMT3.rsp", C.CKM_DES3_CBC_ENCRYPT_DATA)):
        section, key_type, value, iv, plain, cipher = next(
            r for r in _tdes_records(mode, name) if r[0] == "ENCRYPT" and len(r[4]) == 24)
        base = _base(s, value, key_type)
        param, keep = des_cbc_data(iv, plain) if mode == "CBC" else string_data(plain)
        generic = raw.derive(s, ckm, param, base.handle, {**SECRET, **READABLE})
        assert _value(s, generic) == cipher
        des3 = raw.derive(s, ckm, param, base.handle, {**SECRET, **READABLE, Attribute.KEY_TYPE: KeyType.DES3})
        value = _value(s, des3)
        assert _odd_parity(value) and bytes(b & 0xFE for b in value) == bytes(b & 0xFE for b in cipher)
        short, keep = string_data(plain[:12])
        with raw_rv(C.CKR_MECHANISM_PARAM_INVALID):
            raw.derive(s, C.CKM_DES3_ECB_ENCRYPT_DATA, short, base.handle, dict(SECRET))


# -- attributes of the derived key -------------------------------------------------------------
def _bool(session, handle, attr):
    return raw.attribute(session, handle, attr) == b"\1"


def test_derived_key_inherits_protection(s):
    """A sensitive base makes the derived key sensitive, an unextractable one makes it
    unextractable, whatever the template says; ALWAYS_SENSITIVE / NEVER_EXTRACTABLE hold only
    if they held for every key that went in."""
    base = s.generate_key(KeyType.AES, 256, template={Attribute.DERIVE: True, Attribute.SENSITIVE: True,
                                                      Attribute.EXTRACTABLE: False})
    assert base[Attribute.ALWAYS_SENSITIVE] and base[Attribute.NEVER_EXTRACTABLE]
    key = raw.derive(s, C.CKM_SHA256_KEY_DERIVATION, None, base.handle, {**SECRET, **READABLE})
    for attr, expected in ((C.CKA_SENSITIVE, True), (C.CKA_EXTRACTABLE, False),
                           (C.CKA_ALWAYS_SENSITIVE, True), (C.CKA_NEVER_EXTRACTABLE, True), (C.CKA_LOCAL, False)):
        assert _bool(s, key, attr) is expected, attr
    # mixing in a key that was once readable: the derived key is protected, but not "always"
    other = secret(s, KeyType.GENERIC_SECRET, b"\1" * 8)
    key = raw.derive(s, C.CKM_CONCATENATE_BASE_AND_KEY, ulong(other.handle), base.handle, {**SECRET, **READABLE})
    for attr, expected in ((C.CKA_SENSITIVE, True), (C.CKA_EXTRACTABLE, False),
                           (C.CKA_ALWAYS_SENSITIVE, False), (C.CKA_NEVER_EXTRACTABLE, False)):
        assert _bool(s, key, attr) is expected, attr
    # and the other way round: a readable base with a sensitive second key
    readable = _base(s, b"\2" * 8)
    key = raw.derive(s, C.CKM_CONCATENATE_BASE_AND_KEY, ulong(base.handle), readable.handle, {**SECRET, **READABLE})
    assert _bool(s, key, C.CKA_SENSITIVE) and not _bool(s, key, C.CKA_EXTRACTABLE)
    # an unprotected base leaves the template in charge
    key = raw.derive(s, C.CKM_SHA1_KEY_DERIVATION, None, readable.handle, {**SECRET, **READABLE})
    assert not _bool(s, key, C.CKA_SENSITIVE) and _bool(s, key, C.CKA_EXTRACTABLE)


def test_derive_template(s):
    """CKA_DERIVE_TEMPLATE: its attributes are given to every key derived from that key; a
    caller's template that contradicts it is inconsistent (as CKA_UNWRAP_TEMPLATE)."""
    base = create(s, {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                      Attribute.VALUE: b"\7" * 32, Attribute.DERIVE: True, Attribute.TOKEN: False, **READABLE,
                      Attribute.DERIVE_TEMPLATE: {Attribute.KEY_TYPE: KeyType.AES, Attribute.VALUE_LEN: 16,
                                                  Attribute.ENCRYPT: False}})
    key = raw.derive(s, C.CKM_SHA256_KEY_DERIVATION, None, base, {**SECRET, **READABLE})
    assert raw.attribute(s, key, C.CKA_KEY_TYPE) == ulong(KeyType.AES)
    assert not _bool(s, key, C.CKA_ENCRYPT)
    assert _value(s, key) == hashlib.sha256(b"\7" * 32).digest()[:16]
    key = raw.derive(s, C.CKM_SHA256_KEY_DERIVATION, None, base, {**SECRET, Attribute.ENCRYPT: False})
    assert not _bool(s, key, C.CKA_ENCRYPT)
    with raw_rv(C.CKR_TEMPLATE_INCONSISTENT):
        raw.derive(s, C.CKM_SHA256_KEY_DERIVATION, None, base, {**SECRET, Attribute.ENCRYPT: True})
    with raw_rv(C.CKR_TEMPLATE_INCONSISTENT):
        raw.derive(s, C.CKM_SHA256_KEY_DERIVATION, None, base, {**SECRET, Attribute.KEY_TYPE: KeyType.DES3})


def test_derive_bad_keys(s):
    no_derive = secret(s, KeyType.GENERIC_SECRET, b"abc", DERIVE=False)
    with raw_rv(C.CKR_KEY_FUNCTION_NOT_PERMITTED):
        raw.derive(s, C.CKM_SHA256_KEY_DERIVATION, None, no_derive.handle, dict(SECRET))
    base = _base(s, b"abc")
    with raw_rv(C.CKR_TEMPLATE_INCONSISTENT):  # these mechanisms make secret keys only
        raw.derive(s, C.CKM_SHA256_KEY_DERIVATION, None, base.handle,
                   {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.RSA})
    with raw_rv(C.CKR_TEMPLATE_INCONSISTENT):  # the value is computed, not given
        raw.derive(s, C.CKM_SHA256_KEY_DERIVATION, None, base.handle, {**SECRET, Attribute.VALUE: b"x" * 16})


_WRONG_BASE = [C.CKM_CONCATENATE_BASE_AND_DATA, C.CKM_CONCATENATE_DATA_AND_BASE, C.CKM_XOR_BASE_AND_DATA,
               C.CKM_CONCATENATE_BASE_AND_KEY, C.CKM_EXTRACT_KEY_FROM_KEY, C.CKM_SHA1_KEY_DERIVATION,
               C.CKM_SHA224_KEY_DERIVATION, C.CKM_SHA256_KEY_DERIVATION, C.CKM_SHA384_KEY_DERIVATION,
               C.CKM_SHA512_KEY_DERIVATION]


@pytest.fixture(scope="module")
def asymmetric_bases(s):
    """An RSA and an EC private key that allow derivation (the usage flag is not what refuses them)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from .conftest import ec_private, rsa_from_crypto
    rsa_key, _ = rsa_from_crypto(s, rsa.generate_private_key(65537, 1024), extra={Attribute.DERIVE: True})
    p256 = bytes.fromhex("06082a8648ce3d030107")
    scalar = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value.to_bytes(32, "big")
    return {"RSA": rsa_key.handle, "EC": ec_private(s, p256, scalar).handle}


@pytest.mark.parametrize("base_kind", ["RSA", "EC"])
@pytest.mark.parametrize("ckm", _WRONG_BASE, ids=[C.CKM(m).name for m in _WRONG_BASE])
def test_base_key_of_the_wrong_type(s, asymmetric_bases, ckm, base_kind):
    """A base key that is not a secret key is CKR_KEY_TYPE_INCONSISTENT, before its value is read."""
    other = _base(s, b"\1" * 8)
    params = {C.CKM_CONCATENATE_BASE_AND_KEY: (ulong(other.handle), None),
              C.CKM_EXTRACT_KEY_FROM_KEY: (ulong(3), None)}
    param, keep = params.get(ckm) or (string_data(b"data") if "SHA" not in C.CKM(ckm).name else (None, None))
    with raw_rv(C.CKR_KEY_TYPE_INCONSISTENT):
        raw.derive(s, ckm, param, asymmetric_bases[base_kind], {**SECRET, Attribute.VALUE_LEN: 4})
