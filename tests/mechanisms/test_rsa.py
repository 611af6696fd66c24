"""RSA through the real .so: key sizes, PKCS#1 v1.5, PSS and OAEP against published
vectors (RSA Laboratories PKCS#1 v2.1 files, NIST CAVP SigGen15/SigVerPSS, pyca's
OAEP SHA-2 vectors), SHA-2/SHA-3 variants against `cryptography` with the same key,
wrapping secret keys, and the error codes of bad keys and parameters.
"""

import struct
import subprocess

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass

from ptkhsm import constants as C

from . import raw
from .conftest import public_key_info, raw_rv, rsa_from_crypto, rsa_private, rsa_public
from .vectors import load_nist, load_pkcs1

HASH = {  # digest mechanism -> (MGF, cryptography hash, SHA*-RSA-PKCS, SHA*-RSA-PKCS-PSS)
    Mechanism.SHA_1: (MGF.SHA1, hashes.SHA1, Mechanism.SHA1_RSA_PKCS, Mechanism.SHA1_RSA_PKCS_PSS),
    Mechanism.SHA224: (MGF.SHA224, hashes.SHA224, Mechanism.SHA224_RSA_PKCS, Mechanism.SHA224_RSA_PKCS_PSS),
    Mechanism.SHA256: (MGF.SHA256, hashes.SHA256, Mechanism.SHA256_RSA_PKCS, Mechanism.SHA256_RSA_PKCS_PSS),
    Mechanism.SHA384: (MGF.SHA384, hashes.SHA384, Mechanism.SHA384_RSA_PKCS, Mechanism.SHA384_RSA_PKCS_PSS),
    Mechanism.SHA512: (MGF.SHA512, hashes.SHA512, Mechanism.SHA512_RSA_PKCS, Mechanism.SHA512_RSA_PKCS_PSS),
    Mechanism.SHA3_224: (MGF.SHA3_224, hashes.SHA3_224, Mechanism.SHA3_224_RSA_PKCS,
                         Mechanism.SHA3_224_RSA_PKCS_PSS),
    Mechanism.SHA3_256: (MGF.SHA3_256, hashes.SHA3_256, Mechanism.SHA3_256_RSA_PKCS,
                         Mechanism.SHA3_256_RSA_PKCS_PSS),
    Mechanism.SHA3_384: (MGF.SHA3_384, hashes.SHA3_384, Mechanism.SHA3_384_RSA_PKCS,
                         Mechanism.SHA3_384_RSA_PKCS_PSS),
    Mechanism.SHA3_512: (MGF.SHA3_512, hashes.SHA3_512, Mechanism.SHA3_512_RSA_PKCS,
                         Mechanism.SHA3_512_RSA_PKCS_PSS),
}
SHA2 = [m for m in HASH if not m.name.startswith("SHA3")]
BY_NAME = {"sha1": Mechanism.SHA_1, "sha224": Mechanism.SHA224, "sha256": Mechanism.SHA256,
           "sha384": Mechanism.SHA384, "sha512": Mechanism.SHA512, "SHA1": Mechanism.SHA_1,
           "SHA224": Mechanism.SHA224, "SHA256": Mechanism.SHA256, "SHA384": Mechanism.SHA384,
           "SHA512": Mechanism.SHA512}


def pss_param(digest, salt, mgf=None):
    """CK_RSA_PKCS_PSS_PARAMS packed by hand: python-pkcs11 packs it only for the SHA-1/SHA-2 mechanisms."""
    return struct.pack("LLL", digest, mgf if mgf is not None else HASH[digest][0], salt)


def oaep_param(digest, mgf, label=b""):
    """CK_RSA_PKCS_OAEP_PARAMS with CKZ_DATA_SPECIFIED; returns (bytes, buffer to keep alive)."""
    import ctypes
    buf = ctypes.create_string_buffer(label, len(label) or 1)
    return struct.pack("LLLPL", digest, mgf, C.CKZ_DATA_SPECIFIED, ctypes.addressof(buf) if label else 0,
                       len(label)), buf


@pytest.fixture(scope="module")
def crypto_key():
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def imported(s, crypto_key):
    """The same 2048-bit key inside the module (private, public) and outside it."""
    return rsa_from_crypto(s, crypto_key)


# -- key sizes --------------------------------------------------------------------
def test_mechanism_info_key_sizes(token):
    for mechanism in (Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS_OAEP):
        info = token.slot.get_mechanism_info(mechanism)
        assert (info.min_key_length, info.max_key_length) == (1024, 4096)
    for mechanism in (Mechanism.RSA_PKCS, Mechanism.SHA3_256_RSA_PKCS_PSS):  # they also verify
        info = token.slot.get_mechanism_info(mechanism)
        assert (info.min_key_length, info.max_key_length) == (512, 4096)
    flags = token.slot.get_mechanism_info(Mechanism.RSA_PKCS_OAEP).flags
    assert flags & pkcs11.MechanismFlag.WRAP and flags & pkcs11.MechanismFlag.UNWRAP


@pytest.mark.parametrize("bits", [1024, 3072])
def test_generate_in_range(s, bits):
    public, private = s.generate_keypair(KeyType.RSA, bits, store=False)
    assert public[Attribute.MODULUS_BITS] == bits
    assert len(public[Attribute.MODULUS]) * 8 == bits
    signature = private.sign(b"data", mechanism=Mechanism.SHA256_RSA_PKCS)
    loaded = serialization.load_der_public_key(public_key_info(s, public))
    loaded.verify(signature, b"data", padding.PKCS1v15(), hashes.SHA256())
    assert public_key_info(s, private) == public_key_info(s, public)


@pytest.mark.parametrize("bits", [512, 768, 1016, 4104, 8192])
def test_generate_out_of_range(s, bits):
    with pytest.raises(pkcs11.KeySizeRange):
        s.generate_keypair(KeyType.RSA, bits, store=False)


def test_weak_imported_key_refused(s, tmp_path):
    """A 512-bit key (made by openssl: cryptography will not) imports; it only verifies."""
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512",
                    "-out", str(tmp_path / "weak.pem")], check=True, capture_output=True)
    weak = serialization.load_pem_private_key((tmp_path / "weak.pem").read_bytes(), None)
    assert weak.key_size == 512
    private, public = rsa_from_crypto(s, weak)
    with pytest.raises(pkcs11.KeySizeRange):
        private.sign(b"x", mechanism=Mechanism.SHA256_RSA_PKCS)
    with pytest.raises(pkcs11.KeySizeRange):
        public.encrypt(b"x", mechanism=Mechanism.RSA_PKCS)
    # verification of existing signatures (old certificates) still works
    signature = weak.sign(b"legacy", padding.PKCS1v15(), hashes.SHA256())
    assert public.verify(b"legacy", signature, mechanism=Mechanism.SHA256_RSA_PKCS)


# -- PKCS#1 v1.5 --------------------------------------------------------------------
def test_pkcs1v15_sign_vectors(s):
    """RSA Laboratories' pkcs1v15sign-vectors.txt: 15 keys x 20 SHA-1 signatures, deterministic, exact."""
    keys = load_pkcs1("asymmetric", "RSA", "pkcs1v15sign-vectors.txt")
    assert len(keys) == 15
    for numbers, vectors in keys:
        private = rsa_private(s, **numbers)
        public = rsa_public(s, numbers["n"], numbers["e"])
        for v in vectors:
            message, signature = v["message to be signed"], v["signature"]
            assert private.sign(message, mechanism=Mechanism.SHA1_RSA_PKCS) == signature
            assert public.verify(message, signature, mechanism=Mechanism.SHA1_RSA_PKCS)
            # the same through CKM_RSA_PKCS over the DigestInfo
            digest = hashes.Hash(hashes.SHA1())
            digest.update(message)
            info = bytes.fromhex("3021300906052b0e03021a05000414") + digest.finalize()
            assert private.sign(info, mechanism=Mechanism.RSA_PKCS) == signature


def test_pkcs1v15_verify_cavp(s):
    """NIST SigGen15_186-3: published signatures for SHA-1/SHA-2 and 1024..4096-bit keys verify."""
    n = e = None
    count = 0
    for r in load_nist("asymmetric", "RSA", "FIPS_186-2", "SigGen15_186-3.rsp"):
        if "n" in r:
            n = int(r["n"], 16)
        if "e" in r:
            e = int(r["e"], 16)
        if "S" not in r:
            continue
        public = rsa_public(s, n, e)
        mechanism = HASH[BY_NAME[r["SHAAlg"]]][2]
        message, signature = bytes.fromhex(r["Msg"]), bytes.fromhex(r["S"])
        assert public.verify(message, signature, mechanism=mechanism)
        assert not public.verify(message + b"\0", signature, mechanism=mechanism)
        count += 1
    assert count == 250


@pytest.mark.parametrize("digest", list(HASH), ids=[m.name for m in HASH])
def test_pkcs1v15_sign_matches_cryptography(s, imported, crypto_key, digest):
    """Deterministic: the module's signature with the imported key is byte-for-byte cryptography's."""
    private, public = imported
    _, algorithm, mechanism, _ = HASH[digest]
    data = b"PKCS#1 v1.5 known answer" * 7
    signature = private.sign(data, mechanism=mechanism)
    assert signature == crypto_key.sign(data, padding.PKCS1v15(), algorithm())
    assert public.verify(data, signature, mechanism=mechanism)
    assert private.sign(iter([data[:10], data[10:]]), mechanism=mechanism) == signature


def test_pkcs1v15_decrypt_vectors(s):
    """pkcs1v15crypt-vectors.txt: published ciphertexts decrypt to the published messages."""
    keys = load_pkcs1("asymmetric", "RSA", "pkcs1v15crypt-vectors.txt")
    assert keys
    for numbers, vectors in keys:
        private = rsa_private(s, **numbers)
        for v in vectors:
            assert private.decrypt(v["encryption"], mechanism=Mechanism.RSA_PKCS) == v["message"]


def test_pkcs1v15_encrypt_roundtrip(s, imported, crypto_key):
    private, public = imported
    cipher = public.encrypt(b"secret", mechanism=Mechanism.RSA_PKCS)
    assert crypto_key.decrypt(cipher, padding.PKCS1v15()) == b"secret"
    assert private.decrypt(cipher, mechanism=Mechanism.RSA_PKCS) == b"secret"


# -- PSS ----------------------------------------------------------------------------
def test_pss_vectors(s):
    """pss-vect.txt: 10 keys (1024..2048 bits, odd sizes too) x 6 SHA-1 PSS signatures, salt 20."""
    keys = load_pkcs1("asymmetric", "RSA", "pkcs-1v2-1d2-vec", "pss-vect.txt")
    assert len(keys) == 10
    param = (Mechanism.SHA_1, MGF.SHA1, 20)
    for numbers, vectors in keys:
        public = rsa_public(s, numbers["n"], numbers["e"])
        for v in vectors:
            message, signature = v["message to be signed"], v["signature"]
            assert public.verify(message, signature, mechanism=Mechanism.SHA1_RSA_PKCS_PSS, mechanism_param=param)
            digest = hashes.Hash(hashes.SHA1())
            digest.update(message)
            assert public.verify(digest.finalize(), signature, mechanism=Mechanism.RSA_PKCS_PSS,
                                 mechanism_param=param)
            tampered = bytes([signature[0] ^ 1]) + signature[1:]
            with raw_rv(C.CKR_SIGNATURE_INVALID):
                raw.verify(s, Mechanism.SHA1_RSA_PKCS_PSS, pss_param(Mechanism.SHA_1, 20), public.handle,
                           message, tampered)


def test_pss_verify_cavp(s):
    """NIST SigVerPSS_186-3: SHA-1/SHA-2, 1024..4096 bits, salt 10; P verifies, every F fails."""
    n = None
    passed = failed = 0
    for r in load_nist("asymmetric", "RSA", "FIPS_186-2", "SigVerPSS_186-3.rsp"):
        if "n" in r:
            n = int(r["n"], 16)
        if "S" not in r:
            continue
        public = rsa_public(s, n, int(r["e"], 16))
        digest = BY_NAME[r["SHAAlg"]]
        salt = len(bytes.fromhex(r["SaltVal"]))
        ok = public.verify(bytes.fromhex(r["Msg"]), bytes.fromhex(r["S"]), mechanism=HASH[digest][3],
                           mechanism_param=(digest, HASH[digest][0], salt))
        assert ok == r["Result"].startswith("P"), r["Result"]
        passed += ok
        failed += not ok
    assert passed == 75 and failed == 375


@pytest.mark.parametrize("digest", list(HASH), ids=[m.name for m in HASH])
def test_pss_sign_every_salt(s, imported, crypto_key, digest):
    """Signed in the module with salts 0, 20, hLen and the largest the key allows; verified by cryptography."""
    private, public = imported
    mgf, algorithm, _, mechanism = HASH[digest]
    longest = 256 - algorithm.digest_size - 2
    data = b"PSS round trip"
    for salt in (0, 20, algorithm.digest_size, longest):
        signature = raw.sign(s, mechanism, pss_param(digest, salt), private.handle, data)
        crypto_key.public_key().verify(signature, data, padding.PSS(padding.MGF1(algorithm()), salt),
                                       algorithm())
        raw.verify(s, mechanism, pss_param(digest, salt), public.handle, data, signature)
        reference = crypto_key.sign(data, padding.PSS(padding.MGF1(algorithm()), salt), algorithm())
        raw.verify(s, mechanism, pss_param(digest, salt), public.handle, data, reference)
    with raw_rv(C.CKR_MECHANISM_PARAM_INVALID):
        raw.sign(s, mechanism, pss_param(digest, longest + 1), private.handle, data)


def test_pss_mixed_mgf(s, imported, crypto_key):
    """The PSS hash and the MGF1 hash may differ."""
    private, _ = imported
    signature = raw.sign(s, Mechanism.SHA256_RSA_PKCS_PSS, pss_param(Mechanism.SHA256, 32, MGF.SHA512),
                         private.handle, b"mixed")
    crypto_key.public_key().verify(signature, b"mixed", padding.PSS(padding.MGF1(hashes.SHA512()), 32),
                                   hashes.SHA256())


# -- OAEP ---------------------------------------------------------------------------
def test_oaep_vectors(s):
    """oaep-vect.txt: 10 keys x 6 SHA-1 OAEP ciphertexts decrypt."""
    keys = load_pkcs1("asymmetric", "RSA", "pkcs-1v2-1d2-vec", "oaep-vect.txt")
    assert len(keys) == 10
    for numbers, vectors in keys:
        private = rsa_private(s, **numbers)
        for v in vectors:
            assert private.decrypt(v["encryption"], mechanism=Mechanism.RSA_PKCS_OAEP,
                                   mechanism_param=(Mechanism.SHA_1, MGF.SHA1, None)) == v["message"]


OAEP_PAIRS = [(a, m) for a in ("sha1", "sha224", "sha256", "sha384", "sha512")
              for m in ("sha1", "sha224", "sha256", "sha384", "sha512") if (a, m) != ("sha1", "sha1")]


@pytest.mark.parametrize("mgf_name, alg_name", OAEP_PAIRS, ids=[f"mgf1-{m}-{a}" for m, a in OAEP_PAIRS])
def test_oaep_custom_vectors(s, mgf_name, alg_name):
    """pyca's OAEP vectors for every SHA-1/SHA-2 pairing of hash and MGF1 hash (file names: mgf1, then hash)."""
    keys = load_pkcs1("asymmetric", "RSA", "oaep-custom", f"oaep-{mgf_name}-{alg_name}.txt")
    assert keys
    for numbers, vectors in keys:
        private = rsa_private(s, **numbers)
        for v in vectors:
            title = v["title"]
            assert f"alg={alg_name}" in title and f"mgf1={mgf_name}" in title, title
            digest, mgf = BY_NAME[alg_name], HASH[BY_NAME[mgf_name]][0]
            assert private.decrypt(v["encryption"], mechanism=Mechanism.RSA_PKCS_OAEP,
                                   mechanism_param=(digest, mgf, None)) == v["message"]


def test_oaep_label_vector(s):
    """BoringSSL's OAEP vector with SHA-512 and a label (oaep-label.txt), key given as PKCS#8."""
    records = load_nist("asymmetric", "RSA", "oaep-label.txt")
    assert records
    for r in records:
        key = serialization.load_der_private_key(bytes.fromhex(r["KEY"]), None)
        private, _ = rsa_from_crypto(s, key)
        digest = BY_NAME[r["OAEPDigest"]]
        expected = r["Output"].strip('"').encode() if r["Output"].startswith('"') else bytes.fromhex(r["Output"])
        out = private.decrypt(bytes.fromhex(r["Input"]), mechanism=Mechanism.RSA_PKCS_OAEP,
                              mechanism_param=(digest, HASH[digest][0], bytes.fromhex(r["OAEPLabel"])))
        assert out == expected


@pytest.mark.parametrize("digest", SHA2, ids=[m.name for m in SHA2])
def test_oaep_encrypt_with_label(s, imported, crypto_key, digest):
    private, public = imported
    mgf, algorithm, _, _ = HASH[digest]
    for mgf_digest in SHA2:
        mgf_alg = HASH[mgf_digest][1]
        param = (digest, HASH[mgf_digest][0], b"label")
        cipher = public.encrypt(b"message", mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=param)
        assert crypto_key.decrypt(cipher, padding.OAEP(padding.MGF1(mgf_alg()), algorithm(), b"label")) == b"message"
        assert private.decrypt(cipher, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=param) == b"message"
        with pytest.raises(pkcs11.EncryptedDataInvalid):
            private.decrypt(cipher, mechanism=Mechanism.RSA_PKCS_OAEP,
                            mechanism_param=(digest, HASH[mgf_digest][0], b"other label"))


@pytest.mark.parametrize("digest, mgf", [(Mechanism.SHA3_256, MGF.SHA256), (Mechanism.SHA256, MGF.SHA3_256),
                                         (Mechanism.SHA256, 0x77), (C.CKM_MD5, MGF.SHA1)])
def test_oaep_bad_params(s, imported, digest, mgf):
    """SHA-3 (which cryptography refuses for OAEP), an unknown MGF, a non-SHA hash."""
    _, public = imported
    with pytest.raises(pkcs11.MechanismParamInvalid):
        public.encrypt(b"m", mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=(digest, mgf, None))


def test_oaep_bad_source(s, imported):
    _, public = imported
    param = struct.pack("LLLPL", Mechanism.SHA256, MGF.SHA256, 7, 0, 0)
    with raw_rv(C.CKR_MECHANISM_PARAM_INVALID):
        raw.init("C_EncryptInit", s, Mechanism.RSA_PKCS_OAEP, param, public.handle)


# -- wrapping ---------------------------------------------------------------------------
def _aes_key(s, extractable=True):
    return s.generate_key(KeyType.AES, 256, store=False, template={Attribute.EXTRACTABLE: extractable,
                                                                   Attribute.SENSITIVE: False})


@pytest.mark.parametrize("mechanism, param, pad", [
    (Mechanism.RSA_PKCS, None, padding.PKCS1v15()),
    (Mechanism.RSA_PKCS_OAEP, (Mechanism.SHA256, MGF.SHA256, None),
     padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)),
    (Mechanism.RSA_PKCS_OAEP, (Mechanism.SHA_1, MGF.SHA1, b"wrap label"),
     padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), b"wrap label")),
], ids=["pkcs", "oaep-sha256", "oaep-sha1-label"])
def test_wrap_unwrap_secret_key(s, imported, crypto_key, mechanism, param, pad):
    private, public = imported
    secret = _aes_key(s)
    wrapped = public.wrap_key(secret, mechanism=mechanism, mechanism_param=param)
    assert crypto_key.decrypt(wrapped, pad) == secret[Attribute.VALUE]
    unwrapped = private.unwrap_key(ObjectClass.SECRET_KEY, KeyType.AES, wrapped, mechanism=mechanism,
                                   mechanism_param=param, template={Attribute.EXTRACTABLE: True,
                                                                    Attribute.SENSITIVE: False})
    assert unwrapped[Attribute.VALUE] == secret[Attribute.VALUE]
    # a key wrapped outside the module unwraps inside it
    outside = crypto_key.public_key().encrypt(b"\x42" * 16, pad)
    key = private.unwrap_key(ObjectClass.SECRET_KEY, KeyType.AES, outside, mechanism=mechanism,
                             mechanism_param=param, template={Attribute.EXTRACTABLE: True,
                                                              Attribute.SENSITIVE: False})
    assert key[Attribute.VALUE] == b"\x42" * 16
    assert key[Attribute.CHECK_VALUE]


def test_unwrap_garbage(s, imported):
    private, _ = imported
    param = (Mechanism.SHA256, MGF.SHA256, None)
    with pytest.raises(pkcs11.WrappedKeyInvalid):
        private.unwrap_key(ObjectClass.SECRET_KEY, KeyType.AES, b"\1" * 256, mechanism=Mechanism.RSA_PKCS_OAEP,
                           mechanism_param=param)
    with pytest.raises(pkcs11.WrappedKeyLenRange):
        private.unwrap_key(ObjectClass.SECRET_KEY, KeyType.AES, b"\1" * 255, mechanism=Mechanism.RSA_PKCS_OAEP,
                           mechanism_param=param)


def test_wrap_needs_wrap_attribute(s, crypto_key):
    public = rsa_public(s, crypto_key.public_key().public_numbers().n, 65537, extra={Attribute.WRAP: False})
    with raw_rv(C.CKR_KEY_FUNCTION_NOT_PERMITTED):
        raw.wrap(s, Mechanism.RSA_PKCS, None, public.handle, _aes_key(s).handle)


def test_wraps_secret_keys_only(s, crypto_key):
    """RSA PKCS#1 v1.5 and OAEP wrap secret keys only (PKCS#11 §2.1.6, §2.1.8)."""
    public = rsa_public(s, crypto_key.public_key().public_numbers().n, 65537, extra={Attribute.WRAP: True})
    _, ec_private = s.generate_keypair(KeyType.EC, store=False, public_template={
        Attribute.EC_PARAMS: bytes.fromhex("06082a8648ce3d030107")},
        private_template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False})
    with raw_rv(C.CKR_KEY_NOT_WRAPPABLE):
        raw.wrap(s, Mechanism.RSA_PKCS, None, public.handle, ec_private.handle)


# -- bad keys and parameters ----------------------------------------------------------------
def test_wrong_key_type(s):
    _, ec_private = s.generate_keypair(KeyType.EC, store=False, public_template={
        Attribute.EC_PARAMS: bytes.fromhex("06082a8648ce3d030107")})
    for mechanism in (Mechanism.RSA_PKCS, Mechanism.SHA256_RSA_PKCS, Mechanism.SHA256_RSA_PKCS_PSS):
        with raw_rv(C.CKR_KEY_TYPE_INCONSISTENT):
            raw.init("C_SignInit", s, mechanism, pss_param(Mechanism.SHA256, 32)
                     if mechanism == Mechanism.SHA256_RSA_PKCS_PSS else None, ec_private.handle)


def test_missing_usage_flags(s, crypto_key):
    numbers = crypto_key.private_numbers()
    private = rsa_private(s, numbers.public_numbers.n, numbers.public_numbers.e, numbers.d,
                          extra={Attribute.SIGN: False, Attribute.DECRYPT: False})
    public = rsa_public(s, numbers.public_numbers.n, numbers.public_numbers.e,
                        extra={Attribute.VERIFY: False, Attribute.ENCRYPT: False})
    for function, key, mechanism in (("C_SignInit", private, Mechanism.SHA256_RSA_PKCS),
                                     ("C_DecryptInit", private, Mechanism.RSA_PKCS),
                                     ("C_VerifyInit", public, Mechanism.SHA256_RSA_PKCS),
                                     ("C_EncryptInit", public, Mechanism.RSA_PKCS)):
        with raw_rv(C.CKR_KEY_FUNCTION_NOT_PERMITTED):
            raw.init(function, s, mechanism, None, key.handle)


@pytest.mark.parametrize("mechanism, param", [
    (Mechanism.SHA256_RSA_PKCS_PSS, struct.pack("LLL", Mechanism.SHA384, MGF.SHA256, 32)),  # hash mismatch
    (Mechanism.SHA256_RSA_PKCS_PSS, struct.pack("LLL", Mechanism.SHA256, 0x99, 32)),  # unknown MGF
    (Mechanism.RSA_PKCS_PSS, struct.pack("LLL", C.CKM_MD5, MGF.SHA1, 16)),  # unknown hash
    (Mechanism.RSA_PKCS_PSS, struct.pack("LL", Mechanism.SHA256, MGF.SHA256)),  # short structure
    (Mechanism.RSA_PKCS_PSS, None),  # no parameter
    (Mechanism.SHA256_RSA_PKCS, struct.pack("L", 1)),  # a parameter where none is taken
], ids=["hash-mismatch", "bad-mgf", "bad-hash", "short", "missing", "stray"])
def test_bad_pss_params(s, imported, mechanism, param):
    private, _ = imported
    with raw_rv(C.CKR_MECHANISM_PARAM_INVALID):
        raw.sign(s, mechanism, param, private.handle, b"\0" * 32)


@pytest.mark.parametrize("mechanism, param", [
    (Mechanism.SHA256_RSA_PKCS, None), (Mechanism.RSA_PKCS, None),
    (Mechanism.SHA256_RSA_PKCS_PSS, struct.pack("LLL", Mechanism.SHA256, MGF.SHA256, 32)),
    (Mechanism.SHA3_256_RSA_PKCS, None), (Mechanism.RSA_X_509, None)])
def test_wrong_signature_length(s, imported, mechanism, param):
    private, public = imported
    data = b"\1" * 32
    signature = raw.sign(s, mechanism, param, private.handle, data)
    raw.verify(s, mechanism, param, public.handle, data, signature)
    for bad in (signature[:-1], signature + b"\0"):
        with raw_rv(C.CKR_SIGNATURE_LEN_RANGE):
            raw.verify(s, mechanism, param, public.handle, data, bad)


def test_generated_pair_is_usable_outside(s):
    """A pair generated inside: CKA_PUBLIC_KEY_INFO on both halves loads in cryptography."""
    public, private = s.generate_keypair(KeyType.RSA, 2048, store=False)
    loaded = serialization.load_der_public_key(public_key_info(s, private))
    assert loaded.public_numbers().n == int.from_bytes(public[Attribute.MODULUS], "big")
    signature = private.sign(b"x", mechanism=Mechanism.SHA3_512_RSA_PKCS)
    loaded.verify(signature, b"x", padding.PKCS1v15(), hashes.SHA3_512())
