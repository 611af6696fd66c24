"""Known-answer tests for the core mechanisms, through the real .so with python-pkcs11:
SHA-1/SHA-2/SHA-3 digests (NIST CAVP byte-oriented files), HMAC (RFC 4231, incl. the
truncation case through *_HMAC_GENERAL), SHA3-HMAC, AES-ECB/CBC/CTR (NIST SP 800-38A
appendix F, CAVP AESVS, RFC 3686) and AES-GCM (CAVP gcmEncryptExtIV / gcmDecrypt).
"""

import struct

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.mechanisms import GCMParams

from ptkhsm import constants as C

from . import raw
from .conftest import raw_rv
from .vectors import hexbytes, load_nist

DIGESTS = [
    (Mechanism.SHA_1, ("hashes", "SHA1", "SHA1")),
    (Mechanism.SHA224, ("hashes", "SHA2", "SHA224")),
    (Mechanism.SHA256, ("hashes", "SHA2", "SHA256")),
    (Mechanism.SHA384, ("hashes", "SHA2", "SHA384")),
    (Mechanism.SHA512, ("hashes", "SHA2", "SHA512")),
    (Mechanism.SHA3_224, ("hashes", "SHA3", "SHA3_224")),
    (Mechanism.SHA3_256, ("hashes", "SHA3", "SHA3_256")),
    (Mechanism.SHA3_384, ("hashes", "SHA3", "SHA3_384")),
    (Mechanism.SHA3_512, ("hashes", "SHA3", "SHA3_512")),
]


def _digest_vectors(folder, kind, prefix, limit=None):
    records = [r for r in load_nist(folder, kind, f"{prefix}{limit}.rsp") if "MD" in r]
    out = []
    for r in records:
        data = hexbytes(r["Msg"])[:int(r["Len"]) // 8]
        if int(r["Len"]) % 8 == 0:
            out.append((data, bytes.fromhex(r["MD"])))
    return out


@pytest.mark.parametrize("mechanism, where", DIGESTS, ids=[m.name for m, _ in DIGESTS])
def test_digest_cavp(s, mechanism, where):
    """Every byte-oriented ShortMsg vector and the first LongMsg vectors, one-shot and multi-part."""
    vectors = _digest_vectors(*where, "ShortMsg") + _digest_vectors(*where, "LongMsg")[:8]
    assert len(vectors) > 60
    for data, expected in vectors:
        assert s.digest(data, mechanism=mechanism) == expected
    data, expected = vectors[-1]
    chunks = (data[i:i + 97] for i in range(0, len(data), 97))
    assert s.digest(chunks, mechanism=mechanism) == expected


def _generic_secret(session, value):
    return session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
        Attribute.VALUE: value, Attribute.SIGN: True, Attribute.VERIFY: True, Attribute.TOKEN: False})


HMACS = [(Mechanism.SHA224_HMAC, "sha224"), (Mechanism.SHA256_HMAC, "sha256"),
         (Mechanism.SHA384_HMAC, "sha384"), (Mechanism.SHA512_HMAC, "sha512")]


@pytest.mark.parametrize("mechanism, name", HMACS, ids=[n for _, n in HMACS])
def test_hmac_rfc4231(s, mechanism, name):
    vectors = load_nist("HMAC", f"rfc-4231-{name}.txt")
    assert len(vectors) >= 6
    for v in vectors:
        key = _generic_secret(s, bytes.fromhex(v["Key"]))
        data, mac = hexbytes(v["Msg"]), bytes.fromhex(v["MD"])
        assert key.sign(data, mechanism=mechanism) == mac
        assert key.verify(data, mac, mechanism=mechanism)
        with raw_rv(C.CKR_SIGNATURE_INVALID):
            raw.verify(s, mechanism, None, key.handle, data + b"x", mac)


# RFC 4231 §4.6 (and RFC 2202 test case 5 for SHA-1): truncation to 128 bits.
TRUNCATED = {
    Mechanism.SHA_1_HMAC_GENERAL: "4c1a03424b55e07fe7f27be1d58bb932",
    Mechanism.SHA224_HMAC_GENERAL: "0e2aea68a90c8d37c988bcdb9fca6fa8",
    Mechanism.SHA256_HMAC_GENERAL: "a3b6167473100ee06e0c796c2955552b",
    Mechanism.SHA384_HMAC_GENERAL: "3abf34c3503b2a23a46efc619baef897",
    Mechanism.SHA512_HMAC_GENERAL: "415fad6271580a531d4179bc891d87a6",
}


@pytest.mark.parametrize("mechanism", list(TRUNCATED), ids=[m.name for m in TRUNCATED])
def test_hmac_general_rfc4231_truncation(s, mechanism):
    key = _generic_secret(s, b"\x0c" * 20)
    length = struct.pack("L", 16)  # CK_MAC_GENERAL_PARAMS
    mac = key.sign(b"Test With Truncation", mechanism=mechanism, mechanism_param=length)
    assert mac.hex() == TRUNCATED[mechanism]
    assert key.verify(b"Test With Truncation", mac, mechanism=mechanism, mechanism_param=length)
    with raw_rv(C.CKR_SIGNATURE_LEN_RANGE):
        raw.verify(s, mechanism, length, key.handle, b"Test With Truncation", mac[:15])


SHA3_HMACS = [(Mechanism.SHA3_224_HMAC, Mechanism.SHA3_224_HMAC_GENERAL, hashes.SHA3_224),
              (Mechanism.SHA3_256_HMAC, Mechanism.SHA3_256_HMAC_GENERAL, hashes.SHA3_256),
              (Mechanism.SHA3_384_HMAC, Mechanism.SHA3_384_HMAC_GENERAL, hashes.SHA3_384),
              (Mechanism.SHA3_512_HMAC, Mechanism.SHA3_512_HMAC_GENERAL, hashes.SHA3_512)]


@pytest.mark.parametrize("mechanism, general, algorithm", SHA3_HMACS, ids=[m.name for m, _, _ in SHA3_HMACS])
def test_sha3_hmac(s, mechanism, general, algorithm):
    """SHA3-HMAC over the RFC 4231 keys and messages, against `cryptography` (no published vectors shipped)."""
    for v in load_nist("HMAC", "rfc-4231-sha256.txt"):
        value, data = bytes.fromhex(v["Key"]), hexbytes(v["Msg"])
        reference = hmac.HMAC(value, algorithm())
        reference.update(data)
        expected = reference.finalize()
        key = _generic_secret(s, value)
        assert key.sign(data, mechanism=mechanism) == expected
        assert key.sign(data, mechanism=general, mechanism_param=struct.pack("L", 10)) == expected[:10]
    with pytest.raises(pkcs11.MechanismParamInvalid):
        key.sign(data, mechanism=general, mechanism_param=struct.pack("L", algorithm.digest_size + 1))


def _aes(session, value):
    return session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES, Attribute.VALUE: value,
        Attribute.ENCRYPT: True, Attribute.DECRYPT: True, Attribute.TOKEN: False})


# NIST SP 800-38A appendix F: F.1.1/F.1.2 (ECB-AES128), F.2.1/F.2.2 (CBC-AES128), F.5.1/F.5.2 (CTR-AES128).
SP800_38A_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
SP800_38A_PLAIN = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172a" "ae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52ef" "f69f2445df4f9b17ad2b417be66c3710")
SP800_38A = {
    "ecb": (Mechanism.AES_ECB, None,
            "3ad77bb40d7a3660a89ecaf32466ef97" "f5d3d58503b9699de785895a96fdbaaf"
            "43b1cd7f598ece23881b00e3ed030688" "7b0c785e27e8ad3f8223207104725dd4"),
    "cbc": (Mechanism.AES_CBC, bytes.fromhex("000102030405060708090a0b0c0d0e0f"),
            "7649abac8119b246cee98e9b12e9197d" "5086cb9b507219ee95db113a917678b2"
            "73bed6b8e3c1743b7116e69e22229516" "3ff1caa1681fac09120eca307586e1a7"),
    "ctr": (Mechanism.AES_CTR, struct.pack("L16s", 128, bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")),
            "874d6191b620e3261bef6864990db6ce" "9806f66b7970fdff8617187bb9fffdff"
            "5ae4df3edbd5d35e5b4f09020db03eab" "1e031dda2fbe03d1792170a0f3009cee"),
}


@pytest.mark.parametrize("mode", list(SP800_38A))
def test_aes_sp800_38a(s, mode):
    mechanism, param, cipher = SP800_38A[mode]
    key = _aes(s, SP800_38A_KEY)
    assert key.encrypt(SP800_38A_PLAIN, mechanism=mechanism, mechanism_param=param).hex() == cipher
    assert key.decrypt(bytes.fromhex(cipher), mechanism=mechanism, mechanism_param=param) == SP800_38A_PLAIN
    # multi-part, split off the block boundaries
    parts = (SP800_38A_PLAIN[:5], SP800_38A_PLAIN[5:40], SP800_38A_PLAIN[40:])
    assert b"".join(key.encrypt(iter(parts), mechanism=mechanism, mechanism_param=param)).hex() == cipher


AESVS = [(mode, kind, bits) for mode in ("ECB", "CBC") for kind in ("GFSbox", "KeySbox", "MMT")
         for bits in (128, 192, 256)]


@pytest.mark.parametrize("mode, kind, bits", AESVS, ids=[f"{m}{k}{b}" for m, k, b in AESVS])
def test_aes_cavp(s, mode, kind, bits):
    mechanism = Mechanism.AES_ECB if mode == "ECB" else Mechanism.AES_CBC
    records = load_nist("ciphers", "AES", mode, f"{mode}{kind}{bits}.rsp")
    assert records
    for r in records:
        key = _aes(s, bytes.fromhex(r["KEY"]))
        param = bytes.fromhex(r["IV"]) if mode == "CBC" else None
        plain, cipher = bytes.fromhex(r["PLAINTEXT"]), bytes.fromhex(r["CIPHERTEXT"])
        if r["section"] == "ENCRYPT":
            assert key.encrypt(plain, mechanism=mechanism, mechanism_param=param) == cipher
        else:
            assert key.decrypt(cipher, mechanism=mechanism, mechanism_param=param) == plain


@pytest.mark.parametrize("bits", [128, 192, 256])
def test_aes_ctr_rfc3686(s, bits):
    records = load_nist("ciphers", "AES", "CTR", f"aes-{bits}-ctr.txt")
    assert records
    for r in records:
        key = _aes(s, bytes.fromhex(r["KEY"]))
        param = struct.pack("L16s", 32, bytes.fromhex(r["IV"]))  # RFC 3686: 32-bit block counter
        plain, cipher = bytes.fromhex(r["PLAINTEXT"]), bytes.fromhex(r["CIPHERTEXT"])
        assert key.encrypt(plain, mechanism=Mechanism.AES_CTR, mechanism_param=param) == cipher
        assert key.decrypt(cipher, mechanism=Mechanism.AES_CTR, mechanism_param=param) == plain


def _ctr_reference(key, block, bits, length):
    """CKM_AES_CTR's key stream by its definition, block by block over AES-ECB: the low
    `bits` of the counter block count and wrap within themselves."""
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    value, field = int.from_bytes(block, "big"), 1 << bits
    nonce, counter = value - value % field, value % field
    stream = b""
    while len(stream) < length:
        stream += ecb.update((nonce + counter).to_bytes(16, "big"))
        counter = (counter + 1) % field
    return stream[:length]


@pytest.mark.parametrize("bits, start", [(8, 0xFD), (16, 0xFFFF), (1, 1), (32, 0)])
def test_aes_ctr_counter_field_wraps_within_itself(s, bits, start):
    """The bits above the counter field never change, whatever the data length and however
    the calls split it; 2**bits blocks are allowed, one byte more is refused."""
    value = bytes(range(32))
    key = _aes(s, value)
    block = bytes.fromhex("a1a2a3a4a5a6a7a8a9aaabacadaeafb0")
    block = (int.from_bytes(block, "big") >> bits << bits | start).to_bytes(16, "big")
    param = struct.pack("L16s", bits, block)
    plain = bytes(range(256)) * 3 + b"tail"
    if bits < 8:
        plain = plain[:(1 << bits) * 16]
    expected = bytes(a ^ b for a, b in zip(plain, _ctr_reference(value, block, bits, len(plain))))
    assert key.encrypt(plain, mechanism=Mechanism.AES_CTR, mechanism_param=param) == expected
    assert key.decrypt(expected, mechanism=Mechanism.AES_CTR, mechanism_param=param) == plain
    parts = (plain[:7], plain[7:40], plain[40:41], plain[41:])
    assert b"".join(key.encrypt(iter(parts), mechanism=Mechanism.AES_CTR, mechanism_param=param)) == expected
    if bits <= 16:
        limit = (1 << bits) * 16
        full = bytes(limit)
        assert len(key.encrypt(full, mechanism=Mechanism.AES_CTR, mechanism_param=param)) == limit
        with pytest.raises(pkcs11.DataLenRange):
            key.encrypt(full + b"x", mechanism=Mechanism.AES_CTR, mechanism_param=param)
        with pytest.raises(pkcs11.EncryptedDataLenRange):
            key.decrypt(full + b"x", mechanism=Mechanism.AES_CTR, mechanism_param=param)


def _gcm_records(name):
    """96-bit IVs (python-pkcs11 builds CK_GCM_PARAMS only for those), two records per parameter set."""
    return [r for r in load_nist("ciphers", "AES", "GCM", name)
            if r["[IVlen]"] == "96" and int(r["Count"]) < 2]


@pytest.mark.parametrize("bits", [128, 192, 256])
def test_aes_gcm_cavp_encrypt(s, bits):
    records = _gcm_records(f"gcmEncryptExtIV{bits}.rsp")
    assert len(records) > 100
    for r in records:
        key = _aes(s, bytes.fromhex(r["Key"]))
        param = GCMParams(bytes.fromhex(r["IV"]), hexbytes(r["AAD"]) or None, int(r["[Taglen]"]))
        out = key.encrypt(hexbytes(r["PT"]), mechanism=Mechanism.AES_GCM, mechanism_param=param)
        assert out == hexbytes(r["CT"]) + bytes.fromhex(r["Tag"])


@pytest.mark.parametrize("bits", [128, 192, 256])
def test_aes_gcm_cavp_decrypt(s, bits):
    """Published ciphertexts decrypt; the ones marked FAIL are refused with CKR_ENCRYPTED_DATA_INVALID."""
    records = _gcm_records(f"gcmDecrypt{bits}.rsp")
    failing = 0
    for r in records:
        key = _aes(s, bytes.fromhex(r["Key"]))
        param = GCMParams(bytes.fromhex(r["IV"]), hexbytes(r["AAD"]) or None, int(r["[Taglen]"]))
        data = hexbytes(r["CT"]) + bytes.fromhex(r["Tag"])
        if "FAIL" in r:
            failing += 1
            with pytest.raises(pkcs11.EncryptedDataInvalid):
                key.decrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=param)
        else:
            assert key.decrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=param) == hexbytes(r["PT"])
    assert failing and failing < len(records)


def test_aes_refuses_other_key_types_and_missing_usage(s):
    generic = s.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
        Attribute.VALUE: b"k" * 16, Attribute.ENCRYPT: True, Attribute.TOKEN: False})
    with pytest.raises(pkcs11.KeyTypeInconsistent):
        generic.encrypt(b"x" * 16, mechanism=Mechanism.AES_ECB)
    no_encrypt = s.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
        Attribute.VALUE: b"k" * 16, Attribute.ENCRYPT: False, Attribute.TOKEN: False})
    with raw_rv(C.CKR_KEY_FUNCTION_NOT_PERMITTED):
        raw.init("C_EncryptInit", s, Mechanism.AES_ECB, None, no_encrypt.handle)


# -- HMAC-SHA-1 (RFC 2202) and generic secret generation -------------------------------
RFC2202 = [(b"\x0b" * 20, b"Hi There", "b617318655057264e28bc0b6fb378c8ef146be00"),
           (b"Jefe", b"what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
           (b"\xaa" * 20, b"\xdd" * 50, "125d7342b9ac11cd91a39af48aa17b4f63f175d3"),
           (b"\xaa" * 80, b"Test Using Larger Than Block-Size Key - Hash Key First",
            "aa4ae5e15272d00e95705637ce8a3b55ed402112")]


@pytest.mark.parametrize("key, data, mac", RFC2202)
def test_hmac_sha1_rfc2202(s, key, data, mac):
    secret = _generic_secret(s, key)
    assert secret.sign(data, mechanism=Mechanism.SHA_1_HMAC).hex() == mac
    assert secret.verify(data, bytes.fromhex(mac), mechanism=Mechanism.SHA_1_HMAC)


def test_generic_secret_key_gen(s):
    key = s.generate_key(KeyType.GENERIC_SECRET, 256, capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                         template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True})
    value = key[Attribute.VALUE]
    assert len(value) == 32 and key[Attribute.KEY_GEN_MECHANISM] == Mechanism.GENERIC_SECRET_KEY_GEN
    expected = hmac.HMAC(value, hashes.SHA256())
    expected.update(b"data")
    assert key.sign(b"data", mechanism=Mechanism.SHA256_HMAC) == expected.finalize()
    with pytest.raises(pkcs11.exceptions.KeySizeRange):
        s.generate_key(KeyType.GENERIC_SECRET, 8 * 2048)
