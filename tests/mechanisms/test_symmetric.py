"""Triple DES (key generation, KCV, ECB/CBC/CBC-PAD), AES and DES3 CMAC, and AES key
wrap used as encryption (RFC 3394 / RFC 5649), through the real .so with python-pkcs11.

Vectors: NIST CAVP TDES (TECBMMT*/TCBCMMT*/TECBvarkey, from cryptography_vectors),
NIST SP 800-38B CMAC examples (cryptography_vectors CMAC/), RFC 3394 §4 and
RFC 5649 §6 (inline), NIST SP 800-38F CAVP KW/KWP files (cryptography_vectors keywrap/).
"""

import pkcs11
import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from pkcs11 import Attribute, KeyType, Mechanism

from ptkhsm import constants as C

from . import raw
from .conftest import raw_rv
from .symkeys import check_cavp_cipher, secret, ulong
from .vectors import hexbytes, load_nist


def _odd_parity(value):
    return all(bin(b).count("1") % 2 == 1 for b in value)


def _tdes_records(mode, name):
    """CAVP TDES records -> (key type, key value, iv, plaintext, ciphertext)."""
    out = []
    for r in load_nist("ciphers", "3DES", mode, name):
        if "KEY1" not in r:
            continue
        k1, k2, k3 = (bytes.fromhex(r[k]) for k in ("KEY1", "KEY2", "KEY3"))
        key_type, value = (KeyType.DES2, k1 + k2) if k3 == k1 else (KeyType.DES3, k1 + k2 + k3)
        out.append((r["section"], key_type, value, hexbytes(r.get("IV", "")),
                    bytes.fromhex(r["PLAINTEXT"]), bytes.fromhex(r["CIPHERTEXT"])))
    return out


# -- DES2 / DES3 keys ------------------------------------------------------------------
@pytest.mark.parametrize("key_type, length", [(KeyType.DES2, 16), (KeyType.DES3, 24)])
def test_des_key_generation(s, key_type, length):
    """Generated keys have the type's length, odd parity in every byte, the KCV of the spec."""
    for _ in range(8):
        key = s.generate_key(key_type, template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True})
        value = key[Attribute.VALUE]
        assert len(value) == length and _odd_parity(value)
        assert key[Attribute.LOCAL] and key[Attribute.KEY_GEN_MECHANISM] == (
            Mechanism.DES2_KEY_GEN if key_type == KeyType.DES2 else Mechanism.DES3_KEY_GEN)
        full = value + value[:8] if length == 16 else value
        zero = Cipher(TripleDES(full), modes.ECB()).encryptor().update(b"\0" * 8)
        assert key[Attribute.CHECK_VALUE] == zero[:3]


def test_des_kcv_cavp(s):
    """KCV = first 3 bytes of ECB(key, zero block): the TECBvarkey vectors encrypt a zero block."""
    records = [r for r in load_nist("ciphers", "3DES", "ECB", "TECBvarkey.rsp") if r.get("section") == "ENCRYPT"]
    assert len(records) == 56  # one per non-parity key bit
    for r in records[::9]:
        key = bytes.fromhex(r["KEYs"])
        assert bytes.fromhex(r["PLAINTEXT"]) == b"\0" * 8
        obj = secret(s, KeyType.DES3, key * 3)
        assert obj[Attribute.CHECK_VALUE] == bytes.fromhex(r["CIPHERTEXT"])[:3]


def test_des_key_generation_bad_length(s):
    """DES keys have a fixed length: CKA_VALUE_LEN that says otherwise is inconsistent."""
    with pytest.raises(pkcs11.TemplateInconsistent):
        s.generate_key(KeyType.DES3, template={Attribute.VALUE_LEN: 16})
    with pytest.raises(pkcs11.AttributeValueInvalid):
        secret(s, KeyType.DES2, b"\1" * 24)


# -- DES3 ECB / CBC / CBC-PAD ------------------------------------------------------------
TDES_FILES = [("ECB", "TECBMMT2.rsp"), ("ECB", "TECBMMT3.rsp"), ("CBC", "TCBCMMT2.rsp"), ("CBC", "TCBCMMT3.rsp")]


@pytest.mark.parametrize("mode, name", TDES_FILES)
def test_des3_cavp(s, mode, name):
    """Every CAVP multi-block message vector (two- and three-key), encrypt and decrypt sections."""
    mechanism = Mechanism.DES3_ECB if mode == "ECB" else Mechanism.DES3_CBC
    records = _tdes_records(mode, name)
    assert len(records) == 20
    check_cavp_cipher(((section, secret(s, key_type, value), iv, plain, cipher)
                       for section, key_type, value, iv, plain, cipher in records), mechanism, mode == "CBC")


def test_des3_cbc_pad(s):
    """CBC-PAD over a whole-block CAVP message: the CAVP ciphertext, then one block of padding
    (PKCS#7: eight 0x08 bytes, chained); decryption strips it; multi-part gives the same."""
    for section, key_type, value, iv, plain, cipher in _tdes_records("CBC", "TCBCMMT3.rsp")[:10]:
        key = secret(s, key_type, value)
        out = key.encrypt(plain, mechanism=Mechanism.DES3_CBC_PAD, mechanism_param=iv)
        last = Cipher(TripleDES(value), modes.ECB()).encryptor().update(
            bytes(a ^ b for a, b in zip(cipher[-8:], b"\x08" * 8)))
        assert out == cipher + last
        assert key.decrypt(out, mechanism=Mechanism.DES3_CBC_PAD, mechanism_param=iv) == plain
        chunks = [plain[i:i + 5] for i in range(0, len(plain), 5)]
        assert b"".join(key.encrypt(chunks, mechanism=Mechanism.DES3_CBC_PAD, mechanism_param=iv)) == out


def test_des3_bad_parameters(s):
    key = secret(s, KeyType.DES3, bytes(range(24)))
    with pytest.raises(pkcs11.MechanismParamInvalid):  # a 16-byte (AES) IV
        key.encrypt(b"\0" * 8, mechanism=Mechanism.DES3_CBC, mechanism_param=b"\0" * 16)
    with pytest.raises(pkcs11.MechanismParamInvalid):  # ECB takes no parameter
        key.encrypt(b"\0" * 8, mechanism=Mechanism.DES3_ECB, mechanism_param=b"\0" * 8)
    with pytest.raises(pkcs11.DataLenRange):
        key.encrypt(b"\0" * 9, mechanism=Mechanism.DES3_CBC, mechanism_param=b"\0" * 8)
    with pytest.raises(pkcs11.EncryptedDataLenRange):
        key.decrypt(b"\0" * 12, mechanism=Mechanism.DES3_CBC_PAD, mechanism_param=b"\0" * 8)
    bad_pad = key.encrypt(b"\0" * 8, mechanism=Mechanism.DES3_CBC, mechanism_param=b"\0" * 8)  # pad byte 0
    with pytest.raises(pkcs11.EncryptedDataInvalid):
        key.decrypt(bad_pad, mechanism=Mechanism.DES3_CBC_PAD, mechanism_param=b"\0" * 8)
    aes = secret(s, KeyType.AES, bytes(16))
    with raw_rv(C.CKR_KEY_TYPE_INCONSISTENT):
        raw.init("C_EncryptInit", s, C.CKM_DES3_ECB, None, aes.handle)
    no_encrypt = secret(s, KeyType.DES2, bytes(range(16)), ENCRYPT=False)
    with raw_rv(C.CKR_KEY_FUNCTION_NOT_PERMITTED):
        raw.init("C_EncryptInit", s, C.CKM_DES3_ECB, None, no_encrypt.handle)


def test_des_mechanism_info(s):
    for ckm, flags in ((C.CKM_DES3_CBC_PAD, C.CKF_ENCRYPT | C.CKF_DECRYPT | C.CKF_WRAP | C.CKF_UNWRAP),
                       (C.CKM_DES3_KEY_GEN, C.CKF_GENERATE), (C.CKM_DES3_CMAC, C.CKF_SIGN | C.CKF_VERIFY)):
        low, high, got = raw.mechanism_info(s.token.slot.slot_id, ckm)
        assert got & flags == flags and (low, high) in ((16, 24), (24, 24))


# -- CMAC ------------------------------------------------------------------------------
def _cmac_records(name):
    return [r for r in load_nist("CMAC", name) if "OUTPUT" in r]


@pytest.mark.parametrize("name", ["nist-800-38b-aes128.txt", "nist-800-38b-aes192.txt",
                                  "nist-800-38b-aes256.txt"])
def test_aes_cmac_sp800_38b(s, name):
    """The SP 800-38B examples: CKM_AES_CMAC signs and verifies them, one-shot and multi-part;
    CKM_AES_CMAC_GENERAL gives the leftmost bytes."""
    records = _cmac_records(name)
    assert len(records) == 4
    for r in records:
        key = secret(s, KeyType.AES, bytes.fromhex(r["KEY"]))
        message, tag = hexbytes(r["MESSAGE"]), bytes.fromhex(r["OUTPUT"])
        assert key.sign(message, mechanism=Mechanism.AES_CMAC) == tag
        assert key.verify(message, tag, mechanism=Mechanism.AES_CMAC)
        if message:
            parts = [message[i:i + 7] for i in range(0, len(message), 7)]
            assert key.sign(parts, mechanism=Mechanism.AES_CMAC) == tag
        assert key.sign(message, mechanism=Mechanism.AES_CMAC_GENERAL, mechanism_param=ulong(4)) == tag[:4]
        assert key.verify(message, tag[:10], mechanism=Mechanism.AES_CMAC_GENERAL, mechanism_param=ulong(10))


def test_des3_cmac_sp800_38b(s):
    """The SP 800-38B TDEA examples, three-key and two-key."""
    records = _cmac_records("nist-800-38b-3des.txt")
    assert len(records) == 8
    for r in records:
        k1, k2, k3 = (bytes.fromhex(r[k]) for k in ("KEY1", "KEY2", "KEY3"))
        key = secret(s, KeyType.DES2, k1 + k2) if k1 == k3 else secret(s, KeyType.DES3, k1 + k2 + k3)
        message, tag = hexbytes(r["MESSAGE"]), bytes.fromhex(r["OUTPUT"])
        assert key.sign(message, mechanism=Mechanism.DES3_CMAC) == tag
        assert key.sign(message, mechanism=Mechanism.DES3_CMAC_GENERAL, mechanism_param=ulong(5)) == tag[:5]


def test_cmac_bad_parameters(s):
    r = _cmac_records("nist-800-38b-aes128.txt")[1]
    key = secret(s, KeyType.AES, bytes.fromhex(r["KEY"]))
    message, tag = hexbytes(r["MESSAGE"]), bytes.fromhex(r["OUTPUT"])
    for length in (0, 17):
        with pytest.raises(pkcs11.MechanismParamInvalid):
            key.sign(message, mechanism=Mechanism.AES_CMAC_GENERAL, mechanism_param=ulong(length))
    with pytest.raises(pkcs11.MechanismParamInvalid):  # CMAC (not _GENERAL) takes no parameter
        key.sign(message, mechanism=Mechanism.AES_CMAC, mechanism_param=ulong(16))
    with raw_rv(C.CKR_SIGNATURE_INVALID):
        raw.verify(s, C.CKM_AES_CMAC, None, key.handle, message, bytes([tag[0] ^ 1]) + tag[1:])
    with raw_rv(C.CKR_SIGNATURE_LEN_RANGE):
        raw.verify(s, C.CKM_AES_CMAC, None, key.handle, message, tag[:15])
    des = secret(s, KeyType.DES3, bytes(range(24)))
    with raw_rv(C.CKR_KEY_TYPE_INCONSISTENT):
        raw.init("C_SignInit", s, C.CKM_AES_CMAC, None, des.handle)
    with raw_rv(C.CKR_KEY_TYPE_INCONSISTENT):
        raw.init("C_SignInit", s, C.CKM_DES3_CMAC, None, key.handle)
    no_sign = secret(s, KeyType.AES, bytes(16), SIGN=False)
    with raw_rv(C.CKR_KEY_FUNCTION_NOT_PERMITTED):
        raw.init("C_SignInit", s, C.CKM_AES_CMAC, None, no_sign.handle)


# -- AES key wrap as encryption ----------------------------------------------------------
# RFC 3394 §4.1-4.6: (KEK, key data, ciphertext)
RFC3394 = [
    ("000102030405060708090A0B0C0D0E0F", "00112233445566778899AABBCCDDEEFF",
     "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"),
    ("000102030405060708090A0B0C0D0E0F1011121314151617", "00112233445566778899AABBCCDDEEFF",
     "96778B25AE6CA435F92B5B97C050AED2468AB8A17AD84E5D"),
    ("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", "00112233445566778899AABBCCDDEEFF",
     "64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7"),
    ("000102030405060708090A0B0C0D0E0F1011121314151617", "00112233445566778899AABBCCDDEEFF0001020304050607",
     "031D33264E15D33268F24EC260743EDCE1C6C7DDEE725A936BA814915C6762D2"),
    ("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
     "00112233445566778899AABBCCDDEEFF0001020304050607",
     "A8F9BC1612C68B3FF6E6F4FBE30E71E4769C8B80A32CB8958CD5D17D6B254DA1"),
    ("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
     "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
     "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21"),
]
# RFC 5649 §6: (KEK, key, wrapped)
RFC5649 = [
    ("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8", "c37b7e6492584340bed12207808941155068f738",
     "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"),
    ("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8", "466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"),
]


@pytest.mark.parametrize("kek, data, wrapped", RFC3394)
def test_aes_kw_rfc3394(s, kek, data, wrapped):
    key = secret(s, KeyType.AES, bytes.fromhex(kek))
    assert key.encrypt(bytes.fromhex(data), mechanism=Mechanism.AES_KEY_WRAP) == bytes.fromhex(wrapped)
    assert key.decrypt(bytes.fromhex(wrapped), mechanism=Mechanism.AES_KEY_WRAP) == bytes.fromhex(data)
    # the default initial value, given explicitly, is the same
    iv = bytes.fromhex("A6A6A6A6A6A6A6A6")
    assert key.encrypt(bytes.fromhex(data), mechanism=Mechanism.AES_KEY_WRAP,
                       mechanism_param=iv) == bytes.fromhex(wrapped)


@pytest.mark.parametrize("mechanism", [Mechanism.AES_KEY_WRAP_KWP, Mechanism.AES_KEY_WRAP_PAD])
@pytest.mark.parametrize("kek, data, wrapped", RFC5649)
def test_aes_kwp_rfc5649(s, mechanism, kek, data, wrapped):
    key = secret(s, KeyType.AES, bytes.fromhex(kek))
    assert key.encrypt(bytes.fromhex(data), mechanism=mechanism) == bytes.fromhex(wrapped)
    assert key.decrypt(bytes.fromhex(wrapped), mechanism=mechanism) == bytes.fromhex(data)


@pytest.mark.parametrize("name, mechanism", [
    ("KW_AE_128.txt", Mechanism.AES_KEY_WRAP), ("KW_AE_256.txt", Mechanism.AES_KEY_WRAP),
    ("KWP_AE_128.txt", Mechanism.AES_KEY_WRAP_KWP), ("KWP_AE_256.txt", Mechanism.AES_KEY_WRAP_KWP)])
def test_aes_kw_sp800_38f(s, name, mechanism):
    """NIST SP 800-38F CAVP authenticated-encryption vectors (a sample of each file)."""
    records = [r for r in load_nist("keywrap", "kwtestvectors", name) if "C" in r]
    assert len(records) > 100
    for r in records[::17]:
        key = secret(s, KeyType.AES, bytes.fromhex(r["K"]))
        assert key.encrypt(bytes.fromhex(r["P"]), mechanism=mechanism) == bytes.fromhex(r["C"])
        assert key.decrypt(bytes.fromhex(r["C"]), mechanism=mechanism) == bytes.fromhex(r["P"])


@pytest.mark.parametrize("name, mechanism", [
    ("KW_AD_128_inv.txt", Mechanism.AES_KEY_WRAP), ("KWP_AD_128_inv.txt", Mechanism.AES_KEY_WRAP_KWP)])
def test_aes_kw_sp800_38f_invalid(s, name, mechanism):
    """The CAVP authenticated-decryption vectors marked FAIL are refused, never decrypted."""
    records = [r for r in load_nist("keywrap", "kwtestvectors", name) if "FAIL" in r]
    assert len(records) > 20
    for r in records[::7]:
        key = secret(s, KeyType.AES, bytes.fromhex(r["K"]))
        with pytest.raises(pkcs11.EncryptedDataInvalid):
            key.decrypt(bytes.fromhex(r["C"]), mechanism=mechanism)


def test_aes_kw_bad_parameters(s):
    kek, data, wrapped = (bytes.fromhex(x) for x in RFC3394[0])
    key = secret(s, KeyType.AES, kek)
    with pytest.raises(pkcs11.MechanismParamInvalid):  # RFC 3394 initial value is 8 bytes
        key.encrypt(data, mechanism=Mechanism.AES_KEY_WRAP, mechanism_param=b"\xa6" * 7)
    with pytest.raises(pkcs11.MechanismParamInvalid):  # RFC 5649 ICV is 4 bytes
        key.encrypt(data, mechanism=Mechanism.AES_KEY_WRAP_KWP, mechanism_param=b"\xa6" * 8)
    with pytest.raises(pkcs11.EncryptedDataInvalid):  # another initial value: integrity check fails
        key.decrypt(wrapped, mechanism=Mechanism.AES_KEY_WRAP, mechanism_param=b"\xa6" * 7 + b"\xa7")
    with pytest.raises(pkcs11.DataLenRange):
        key.encrypt(data[:12], mechanism=Mechanism.AES_KEY_WRAP)
    with pytest.raises(pkcs11.DataLenRange):
        key.encrypt(data[:8], mechanism=Mechanism.AES_KEY_WRAP)
    with pytest.raises(pkcs11.EncryptedDataLenRange):
        key.decrypt(wrapped[:20], mechanism=Mechanism.AES_KEY_WRAP)
    with pytest.raises(pkcs11.EncryptedDataInvalid):
        key.decrypt(wrapped[:-1] + bytes([wrapped[-1] ^ 0x80]), mechanism=Mechanism.AES_KEY_WRAP)
    des = secret(s, KeyType.DES3, bytes(range(24)))
    with raw_rv(C.CKR_KEY_TYPE_INCONSISTENT):
        raw.init("C_EncryptInit", s, C.CKM_AES_KEY_WRAP, None, des.handle)
    no_decrypt = secret(s, KeyType.AES, kek, DECRYPT=False)
    with raw_rv(C.CKR_KEY_FUNCTION_NOT_PERMITTED):
        raw.init("C_DecryptInit", s, C.CKM_AES_KEY_WRAP, None, no_decrypt.handle)


def test_aes_kwp_custom_icv(s):
    """A caller's RFC 5649 ICV is used and checked: what it wrapped does not unwrap with the default."""
    kek, data, _ = (bytes.fromhex(x) for x in RFC5649[0])
    key = secret(s, KeyType.AES, kek)
    out = key.encrypt(data, mechanism=Mechanism.AES_KEY_WRAP_KWP, mechanism_param=b"\1\2\3\4")
    assert key.decrypt(out, mechanism=Mechanism.AES_KEY_WRAP_KWP, mechanism_param=b"\1\2\3\4") == data
    with pytest.raises(pkcs11.EncryptedDataInvalid):
        key.decrypt(out, mechanism=Mechanism.AES_KEY_WRAP_KWP)
