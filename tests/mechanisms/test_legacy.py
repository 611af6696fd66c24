"""The legacy mechanisms PTK-C offers, through the real .so (python-pkcs11 names them with a
leading underscore, as deprecated): single DES (key generation,
ECB, CBC, CBC-PAD, DES-MAC), MD5, MD5-HMAC, MD5-RSA-PKCS and CKM_EXTRACT_KEY_FROM_KEY.

Vectors: the NIST DES known-answer tests of SP 800-20 as CAVP ships them for TDES with
KEY1 = KEY2 = KEY3 (TECB*/TCBC* varkey, vartext, invperm, permop, subtab: single DES),
FIPS 81 appendix B (ECB, CBC), FIPS 113 (DES-MAC), RFC 1321 (MD5), RFC 2202 (HMAC-MD5,
the RFC 2104 construction), RFC 8017 §9.2 note 1 (the MD5 DigestInfo) and the worked
example of PKCS#11 v2.40 §2.39.7 (key extraction).
"""

import subprocess

import pkcs11
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass

from conftest import MODULE
from ptkhsm import constants as C

from . import raw
from .conftest import raw_rv, rsa_from_crypto
from .symkeys import check_cavp_cipher
from .vectors import load_nist

KEY = bytes.fromhex("0123456789abcdef")
FIPS81_IV = bytes.fromhex("1234567890abcdef")
FIPS81_TEXT = b"Now is the time for all "
FIPS81_ECB = bytes.fromhex("3fa40e8a984d48156a271787ab8883f9893d51ec4b563b53")
FIPS81_CBC = bytes.fromhex("e5c7cdde872bf27c43e934008c389c0f683788499a7c05f6")
READABLE = {Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True}
LEGACY = ["DES-KEY-GEN", "DES-ECB", "DES-CBC", "DES-CBC-PAD", "DES-MAC", "MD5", "MD5-HMAC", "MD5-RSA-PKCS",
          "EXTRACT-KEY-FROM-KEY"]


def _des(session, value, **extra):
    return session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType._DES, Attribute.VALUE: value,
        Attribute.ENCRYPT: True, Attribute.DECRYPT: True, Attribute.SIGN: True, Attribute.VERIFY: True,
        Attribute.WRAP: True, Attribute.UNWRAP: True, Attribute.TOKEN: False, **READABLE, **extra})


def _single_des_kat(mode):
    """The SP 800-20 KATs: CAVP TDES records whose one key serves as KEY1 = KEY2 = KEY3."""
    prefix = "TECB" if mode == "ECB" else "TCBC"
    out = []
    for test in ("varkey", "vartext", "invperm", "permop", "subtab"):
        for r in load_nist("ciphers", "3DES", mode, f"{prefix}{test}.rsp"):
            if "KEYs" in r:
                out.append((r["section"], bytes.fromhex(r["KEYs"]), bytes.fromhex(r.get("IV", "00" * 8)),
                            bytes.fromhex(r["PLAINTEXT"]), bytes.fromhex(r["CIPHERTEXT"])))
    return out


def test_pkcs11_tool_lists_the_legacy_mechanisms():
    out = subprocess.run(["pkcs11-tool", "--module", MODULE, "-M"], check=True, capture_output=True,
                         text=True).stdout
    listed = {line.split(",")[0].strip() for line in out.splitlines() if line.startswith("  ")}
    assert set(LEGACY) <= listed, set(LEGACY) - listed


@pytest.mark.parametrize("mode, ckm", [("ECB", Mechanism._DES_ECB), ("CBC", Mechanism._DES_CBC)])
def test_des_sp800_20_kat(s, mode, ckm):
    records = _single_des_kat(mode)
    assert len(records) > 400
    keys = {}
    check_cavp_cipher(((section, keys.get(value) or keys.setdefault(value, _des(s, value)), iv, plain, cipher)
                       for section, value, iv, plain, cipher in records), ckm, mode == "CBC")


def test_des_fips81(s):
    key = _des(s, KEY)
    assert key.encrypt(FIPS81_TEXT, mechanism=Mechanism._DES_ECB) == FIPS81_ECB
    assert key.encrypt(FIPS81_TEXT, mechanism=Mechanism._DES_CBC, mechanism_param=FIPS81_IV) == FIPS81_CBC
    assert key.decrypt(FIPS81_CBC, mechanism=Mechanism._DES_CBC, mechanism_param=FIPS81_IV) == FIPS81_TEXT
    # multi-part, split off the block boundaries
    parts = (FIPS81_TEXT[:5], FIPS81_TEXT[5:19], FIPS81_TEXT[19:])
    assert b"".join(key.encrypt(parts, mechanism=Mechanism._DES_ECB)) == FIPS81_ECB
    # CBC-PAD: the same blocks, then a block of eight 8s (PKCS #7)
    padded = key.encrypt(FIPS81_TEXT, mechanism=Mechanism._DES_CBC_PAD, mechanism_param=FIPS81_IV)
    assert len(padded) == 32 and padded[:24] == FIPS81_CBC
    assert key.decrypt(padded, mechanism=Mechanism._DES_CBC_PAD, mechanism_param=FIPS81_IV) == FIPS81_TEXT
    with pytest.raises(pkcs11.DataLenRange):
        key.encrypt(b"short", mechanism=Mechanism._DES_ECB)


def test_des_mac_fips113(s):
    """FIPS 113's example (the last block zero padded), and the FIPS 81 CBC chain with a zero IV
    (its first block XORed with the FIPS 81 IV): the MAC is the first half of the last block."""
    key = _des(s, KEY)
    assert key.sign(b"7654321 Now is the time for ", mechanism=Mechanism._DES_MAC) == bytes.fromhex("f1d30f68")
    chained = bytes(a ^ b for a, b in zip(FIPS81_TEXT[:8], FIPS81_IV)) + FIPS81_TEXT[8:]
    assert key.sign(chained, mechanism=Mechanism._DES_MAC) == FIPS81_CBC[-8:-4]
    assert key.verify(chained, FIPS81_CBC[-8:-4], mechanism=Mechanism._DES_MAC)
    assert not key.verify(chained, bytes(4), mechanism=Mechanism._DES_MAC)


def test_des_key_generation(s):
    for _ in range(4):
        key = s.generate_key(KeyType._DES, 64, mechanism=Mechanism._DES_KEY_GEN, template=READABLE,
                             capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT)
        value = key[Attribute.VALUE]
        assert len(value) == 8 and all(bin(b).count("1") % 2 for b in value)
        assert key[Attribute.KEY_GEN_MECHANISM] == Mechanism._DES_KEY_GEN
        assert key[Attribute.VALUE_LEN] == 8
        ecb = _des(s, value).encrypt(bytes(8), mechanism=Mechanism._DES_ECB)
        assert key[Attribute.CHECK_VALUE] == ecb[:3]


def test_des_wraps_under_cbc_pad(s):
    kek = _des(s, KEY)
    secret = _des(s, bytes.fromhex("fedcba9876543210"))
    wrapped = kek.wrap_key(secret, mechanism=Mechanism._DES_CBC_PAD, mechanism_param=FIPS81_IV)
    assert len(wrapped) == 16
    back = kek.unwrap_key(ObjectClass.SECRET_KEY, KeyType._DES, wrapped, mechanism=Mechanism._DES_CBC_PAD,
                          mechanism_param=FIPS81_IV, template=READABLE, capabilities=MechanismFlag.ENCRYPT)
    assert back[Attribute.VALUE] == bytes.fromhex("fedcba9876543210")


def test_des3_mechanisms_refuse_single_des_keys(s):
    with raw_rv(C.CKR_KEY_TYPE_INCONSISTENT):
        raw.init("C_EncryptInit", s, C.CKM_DES3_ECB, None, _des(s, KEY).handle)


def test_md5_rfc1321(s):
    vectors = [r for r in load_nist("hashes", "MD5", "rfc-1321.txt") if "MD" in r]
    assert len(vectors) == 7
    for r in vectors:
        data = bytes.fromhex(r["Msg"])[:int(r["Len"]) // 8]
        assert s.digest(data, mechanism=Mechanism._MD5).hex() == r["MD"]
    last = bytes.fromhex(vectors[-1]["Msg"])
    assert s.digest((last[i:i + 7] for i in range(0, len(last), 7)), mechanism=Mechanism._MD5).hex() == \
        vectors[-1]["MD"]


@pytest.mark.parametrize("key_type", [KeyType.GENERIC_SECRET, C.CKK_MD5_HMAC])
def test_md5_hmac_rfc2202(s, key_type):
    vectors = load_nist("HMAC", "rfc-2202-md5.txt")
    assert len(vectors) == 7
    for r in vectors:
        key = s.create_object({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: key_type,
                               Attribute.VALUE: bytes.fromhex(r["Key"]), Attribute.SIGN: True,
                               Attribute.VERIFY: True, Attribute.TOKEN: False})
        data = bytes.fromhex(r["Msg"])[:int(r["Len"]) // 8]
        assert key.sign(data, mechanism=Mechanism._MD5_HMAC).hex() == r["MD"]
        assert key.verify(data, bytes.fromhex(r["MD"]), mechanism=Mechanism._MD5_HMAC)


def test_md5_rsa_pkcs(s):
    """The signature opens to EMSA-PKCS1-v1_5 of the MD5 DigestInfo (RFC 8017 §9.2) and
    RFC 1321's MD5("abc"); it verifies, a changed message does not."""
    private_key = rsa.generate_private_key(65537, 2048)
    private, public = rsa_from_crypto(s, private_key)
    signature = private.sign(b"abc", mechanism=Mechanism.MD5_RSA_PKCS)
    numbers = private_key.public_key().public_numbers()
    em = pow(int.from_bytes(signature, "big"), numbers.e, numbers.n).to_bytes(256, "big")
    digest_info = bytes.fromhex("3020300c06082a864886f70d020505000410") + \
        bytes.fromhex("900150983cd24fb0d6963f7d28e17f72")
    assert em == b"\0\1" + b"\xff" * (256 - 3 - len(digest_info)) + b"\0" + digest_info
    assert public.verify(b"abc", signature, mechanism=Mechanism.MD5_RSA_PKCS)
    assert not public.verify(b"abd", signature, mechanism=Mechanism.MD5_RSA_PKCS)
    assert private.sign([b"a", b"bc"], mechanism=Mechanism.MD5_RSA_PKCS) == signature


def _generic(session, value):
    return session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
        Attribute.VALUE: value, Attribute.DERIVE: True, Attribute.TOKEN: False, **READABLE})


def test_extract_key_from_key(s):
    """v2.40 §2.39.7's example: base 329F84A9, bit index 21 -> 16 bits 1001 0101 0010 0110.
    The bits wrap around the base key; a DES key gets odd parity; the length must be given."""
    base = _generic(s, bytes.fromhex("329f84a9"))
    secret = {Attribute.CLASS: ObjectClass.SECRET_KEY, **READABLE, Attribute.TOKEN: False}
    key = raw.derive(s, C.CKM_EXTRACT_KEY_FROM_KEY, raw.struct.pack("L", 21), base.handle,
                     {**secret, Attribute.VALUE_LEN: 2})
    assert raw.attribute(s, key, C.CKA_VALUE) == bytes.fromhex("9526")
    key = raw.derive(s, C.CKM_EXTRACT_KEY_FROM_KEY, raw.struct.pack("L", 0), base.handle,
                     {**secret, Attribute.VALUE_LEN: 6})
    assert raw.attribute(s, key, C.CKA_VALUE) == bytes.fromhex("329f84a9329f")
    des = raw.derive(s, C.CKM_EXTRACT_KEY_FROM_KEY, raw.struct.pack("L", 4), base.handle,
                     {**secret, Attribute.KEY_TYPE: KeyType._DES})
    value = raw.attribute(s, des, C.CKA_VALUE)
    assert bytes(b & 0xFE for b in value) == bytes(b & 0xFE for b in bytes.fromhex("29f84a9329f84a93"))
    assert all(bin(b).count("1") % 2 for b in value)
    with raw_rv(C.CKR_TEMPLATE_INCOMPLETE):
        raw.derive(s, C.CKM_EXTRACT_KEY_FROM_KEY, raw.struct.pack("L", 21), base.handle, secret)
    with raw_rv(C.CKR_MECHANISM_PARAM_INVALID):
        raw.derive(s, C.CKM_EXTRACT_KEY_FROM_KEY, None, base.handle, {**secret, Attribute.VALUE_LEN: 2})


def test_legacy_mechanisms_are_weak_rows():
    """Every item-1 mechanism is marked weak in its registry row (the one place a policy
    gate would look, docs/decisions.md), and no other mechanism is."""
    from ptkhsm.hsm.mechanisms import REGISTRY
    weak = {ckm for ckm, row in REGISTRY.items() if row.info.get("weak")}
    assert weak == {C.CKM_DES_KEY_GEN, C.CKM_DES_ECB, C.CKM_DES_CBC, C.CKM_DES_CBC_PAD, C.CKM_DES_MAC,
                    C.CKM_MD5, C.CKM_MD5_HMAC, C.CKM_MD5_HMAC_GENERAL, C.CKM_MD5_RSA_PKCS}
