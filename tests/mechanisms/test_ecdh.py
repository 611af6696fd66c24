"""ECDH through the real .so: CKM_ECDH1_DERIVE and CKM_ECDH1_COFACTOR_DERIVE on P-256/P-384/
P-521 keys against NIST CAVP KAS (ECC static unified, ZZ only) verdicts, X25519/X448 with
CKK_EC_MONTGOMERY keys against RFC 7748, the ANSI X9.63 KDFs (the KDF itself against the
CAVP ansx963_2001 vectors; through the module against the same KDF over Z), how the
derived key's type and length are chosen, and the error codes of bad keys and parameters.
"""

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x448, x25519
from pkcs11 import KDF, Attribute, KeyType, Mechanism

from ptkhsm import constants as C
from ptkhsm.hsm.mechanisms import ecdh

from . import raw
from .conftest import der_octet_string, ec_private, raw_rv
from .vectors import hexbytes, load_nist

OID = {"P-192": bytes.fromhex("06082a8648ce3d030101"), "P-224": bytes.fromhex("06052b81040021"),
       "P-256": bytes.fromhex("06082a8648ce3d030107"), "P-384": bytes.fromhex("06052b81040022"),
       "P-521": bytes.fromhex("06052b81040023"), "K-256": bytes.fromhex("06052b8104000a")}
CURVE = {"P-192": ec.SECP192R1, "P-224": ec.SECP224R1, "P-256": ec.SECP256R1, "P-384": ec.SECP384R1,
         "P-521": ec.SECP521R1, "K-256": ec.SECP256K1}
KAS_SET = {"EA": "P-192", "EB": "P-224", "EC": "P-256", "ED": "P-384", "EE": "P-521"}
X25519_OID, X448_OID = bytes.fromhex("06032b656e"), bytes.fromhex("06032b656f")
KDF_HASH = {KDF.SHA1: hashes.SHA1, KDF.SHA224: hashes.SHA224, KDF.SHA256: hashes.SHA256,
            KDF.SHA384: hashes.SHA384, KDF.SHA512: hashes.SHA512, C.CKD_SHA3_256_KDF: hashes.SHA3_256,
            C.CKD_SHA3_512_KDF: hashes.SHA3_512}
SECRET = {Attribute.CLASS: C.CKO_SECRET_KEY, Attribute.KEY_TYPE: C.CKK_GENERIC_SECRET,
          Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True, Attribute.TOKEN: False}


def derive(s, base, public, kdf=C.CKD_NULL, shared=None, template=None, mechanism=Mechanism.ECDH1_DERIVE):
    """C_DeriveKey -> the derived key's CKA_VALUE."""
    param, keep = raw.ecdh1_params(kdf, shared, public)
    handle = raw.derive(s, mechanism, param, base, {**SECRET, **(template or {})})
    return raw.attribute(s, handle, C.CKA_VALUE)


def _uncompressed(public):
    return public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def _kas_records():
    records = load_nist("asymmetric", "ECDH", "KASValidityTest_ECCStaticUnified_NOKC_ZZOnly_init.fax")
    return [r for r in records if "Z" in r and r["section"].split(" ")[0] in KAS_SET]


@pytest.mark.parametrize("mechanism", [Mechanism.ECDH1_DERIVE, Mechanism.ECDH1_COFACTOR_DERIVE])
def test_kas_cavp(s, mechanism):
    """Correct vectors give Z exactly (leading zero bytes kept); an invalid peer key is refused
    with CKR_MECHANISM_PARAM_INVALID; a changed private key or Z gives a different Z."""
    records = _kas_records()
    outcomes = {"P": 0, "refused": 0, "differs": 0, "skipped": 0}
    for r in records:
        curve = KAS_SET[r["section"].split(" ")[0]]
        size = (CURVE[curve].key_size + 7) // 8
        result = r["Result"]
        if "IUT's Static public key" in result:  # concerns the peer's view of our public key
            outcomes["skipped"] += 1
            continue
        try:
            base = ec_private(s, OID[curve], int(r["dsIUT"], 16).to_bytes(size, "big"))
        except pkcs11.AttributeValueInvalid:
            assert "private key" in result
            outcomes["refused"] += 1
            continue
        # the file pads some coordinates beyond the field size: go through integers
        peer = b"\4" + int(r["QsCAVSx"], 16).to_bytes(size, "big") + int(r["QsCAVSy"], 16).to_bytes(size, "big")
        z = bytes.fromhex(r["Z"])
        if result.startswith("P"):
            assert derive(s, base.handle, peer, mechanism=mechanism) == z
            assert derive(s, base.handle, der_octet_string(peer), mechanism=mechanism) == z
            outcomes["P"] += 1
        elif "CAVS's Static public key" in result:
            with raw_rv(C.CKR_MECHANISM_PARAM_INVALID):
                derive(s, base.handle, peer, mechanism=mechanism)
            outcomes["refused"] += 1
        else:
            assert derive(s, base.handle, peer, mechanism=mechanism) != z
            outcomes["differs"] += 1
    assert outcomes == {"P": 90, "refused": 22, "differs": 18, "skipped": 20}, outcomes


def test_x963_kdf_cavp():
    """The KDF the module applies (ptkhsm.hsm.mechanisms.ecdh.x963_kdf) on the CAVP ANSI X9.63 vectors."""
    names = {"SHA-1": hashes.SHA1, "SHA-224": hashes.SHA224, "SHA-256": hashes.SHA256,
             "SHA-384": hashes.SHA384, "SHA-512": hashes.SHA512}
    records = [r for r in load_nist("KDF", "ansx963_2001.txt") if "key_data" in r]
    assert len(records) >= 50
    for r in records:
        length = int(r["[key data length]"]) // 8
        out = ecdh.x963_kdf(names[r["section"]](), bytes.fromhex(r["Z"]), hexbytes(r["SharedInfo"]), length)
        assert out.hex() == r["key_data"]


@pytest.mark.parametrize("curve", list(OID))
def test_ecdh_kdfs_between_generated_keys(s, curve):
    """Two key pairs generated inside agree; every X9.63 KDF gives X963KDF(Z) of the requested length."""
    params = {Attribute.EC_PARAMS: OID[curve]}
    capabilities = pkcs11.MechanismFlag.DERIVE | pkcs11.MechanismFlag.SIGN | pkcs11.MechanismFlag.VERIFY
    pub_a, priv_a = s.generate_keypair(KeyType.EC, store=False, public_template=params, capabilities=capabilities)
    pub_b, priv_b = s.generate_keypair(KeyType.EC, store=False, public_template=params, capabilities=capabilities)
    point_a, point_b = pub_a[Attribute.EC_POINT], pub_b[Attribute.EC_POINT]
    z = derive(s, priv_a.handle, point_b)
    assert z == derive(s, priv_b.handle, point_a)
    assert z == derive(s, priv_b.handle, point_a[2:] if point_a[1] < 0x80 else point_a[3:])  # raw point
    assert len(z) == (CURVE[curve].key_size + 7) // 8
    # the compressed encoding of the peer's point is accepted too
    loaded = ec.EllipticCurvePublicKey.from_encoded_point(CURVE[curve](), point_b[2:] if point_b[1] < 0x80
                                                          else point_b[3:])
    compressed = loaded.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    assert derive(s, priv_a.handle, compressed) == z
    for kdf, algorithm in KDF_HASH.items():
        for length, shared in ((16, None), (48, b"shared info"), (100, b"\0" * 7)):
            out = derive(s, priv_a.handle, point_b, kdf=kdf, shared=shared, template={Attribute.VALUE_LEN: length})
            assert out == ecdh.x963_kdf(algorithm(), z, shared, length)
            assert len(out) == length


def test_ecdh_against_cryptography(s):
    """Z agrees with `cryptography` on the other side, both for a peer outside and in."""
    size = 48
    peer = ec.generate_private_key(ec.SECP384R1())
    mine = ec.generate_private_key(ec.SECP384R1())
    base = ec_private(s, OID["P-384"], mine.private_numbers().private_value.to_bytes(size, "big"))
    z = derive(s, base.handle, _uncompressed(peer.public_key()))
    assert z == peer.exchange(ec.ECDH(), mine.public_key())


def test_derived_key_types_and_truncation(s):
    mine = ec.generate_private_key(ec.SECP256R1())
    peer = _uncompressed(ec.generate_private_key(ec.SECP256R1()).public_key())
    base = ec_private(s, OID["P-256"], mine.private_numbers().private_value.to_bytes(32, "big"))
    z = derive(s, base.handle, peer)
    # CKD_NULL + CKA_VALUE_LEN: bytes are removed from the leading end of Z
    assert derive(s, base.handle, peer, template={Attribute.VALUE_LEN: 20}) == z[-20:]
    # an AES key of 16 bytes, usable at once
    aes = derive(s, base.handle, peer, template={Attribute.KEY_TYPE: C.CKK_AES, Attribute.VALUE_LEN: 16,
                                                 Attribute.ENCRYPT: True})
    assert aes == z[-16:]
    key = base.derive_key(KeyType.AES, 256, mechanism=Mechanism.ECDH1_DERIVE,
                          mechanism_param=(KDF.SHA256, b"info", peer),
                          template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True})
    assert key[Attribute.VALUE] == ecdh.x963_kdf(hashes.SHA256(), z, b"info", 32)
    assert key[Attribute.KEY_TYPE] == KeyType.AES and key[Attribute.CLASS] == pkcs11.ObjectClass.SECRET_KEY
    assert key.encrypt(b"\0" * 16, mechanism=Mechanism.AES_ECB)
    # DES3 has a fixed length: no CKA_VALUE_LEN needed
    des3 = derive(s, base.handle, peer, kdf=C.CKD_SHA256_KDF, template={Attribute.KEY_TYPE: C.CKK_DES3})
    assert len(des3) == 24
    # ... and odd parity, as every derived DES key (the KDF's bytes with their low bits set)
    assert all(bin(b).count("1") % 2 for b in des3)
    assert bytes(b & 0xFE for b in des3) == bytes(b & 0xFE for b in ecdh.x963_kdf(hashes.SHA256(), z, None, 24))
    des = derive(s, base.handle, peer, template={Attribute.KEY_TYPE: C.CKK_DES})
    assert all(bin(b).count("1") % 2 for b in des) and bytes(b & 0xFE for b in des) == bytes(b & 0xFE for b in z[-8:])
    # a sensitive derived key stays inside
    handle = raw.derive(s, Mechanism.ECDH1_DERIVE, raw.ecdh1_params(C.CKD_NULL, None, peer)[0], base.handle,
                        {Attribute.CLASS: C.CKO_SECRET_KEY, Attribute.KEY_TYPE: C.CKK_GENERIC_SECRET,
                         Attribute.TOKEN: False})
    with raw_rv(C.CKR_ATTRIBUTE_SENSITIVE):
        raw.attribute(s, handle, C.CKA_VALUE)


# -- X25519 / X448 ------------------------------------------------------------------------
def _montgomery_private(s, params, scalar, derive_flag=True):
    return raw.create_object(s, {Attribute.CLASS: C.CKO_PRIVATE_KEY, Attribute.KEY_TYPE: C.CKK_EC_MONTGOMERY,
                                 Attribute.EC_PARAMS: params, Attribute.VALUE: scalar,
                                 Attribute.DERIVE: derive_flag, Attribute.TOKEN: False})


@pytest.mark.parametrize("folder, params", [("X25519", X25519_OID), ("X448", X448_OID)])
def test_rfc7748_vectors(s, folder, params):
    records = load_nist("asymmetric", folder, "rfc7748.txt")
    assert len(records) >= 2
    for r in records:
        base = _montgomery_private(s, params, bytes.fromhex(r["INPUT_SCALAR"]))
        u, expected = bytes.fromhex(r["INPUT_U"]), bytes.fromhex(r["OUTPUT_U"])
        assert derive(s, base, u) == expected
        assert derive(s, base, der_octet_string(u)) == expected


# RFC 7748 §6.1: Alice and Bob's X25519 exchange.
ALICE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
ALICE_PUBLIC = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
BOB = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
BOB_PUBLIC = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"


def test_rfc7748_diffie_hellman(s):
    alice = _montgomery_private(s, X25519_OID, bytes.fromhex(ALICE))
    bob = _montgomery_private(s, X25519_OID, bytes.fromhex(BOB))
    assert derive(s, alice, bytes.fromhex(BOB_PUBLIC)).hex() == SHARED
    assert derive(s, bob, bytes.fromhex(ALICE_PUBLIC)).hex() == SHARED
    spki = raw.attribute(s, alice, C.CKA_PUBLIC_KEY_INFO)
    assert serialization.load_der_public_key(spki).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex() == ALICE_PUBLIC


MONTGOMERY = [("X25519", X25519_OID, x25519.X25519PrivateKey, 32),
              ("X448", X448_OID, x448.X448PrivateKey, 56),
              ("curve25519", b"\x13\x0acurve25519", x25519.X25519PrivateKey, 32),
              ("curve448", b"\x13\x08curve448", x448.X448PrivateKey, 56)]


@pytest.mark.parametrize("name, params, cls, size", MONTGOMERY, ids=[m[0] for m in MONTGOMERY])
def test_montgomery_generate_and_derive(s, name, params, cls, size):
    public, private = raw.generate_keypair(
        s, C.CKM_EC_MONTGOMERY_KEY_PAIR_GEN,
        {Attribute.EC_PARAMS: params, Attribute.TOKEN: False},
        {Attribute.DERIVE: True, Attribute.TOKEN: False})
    point = raw.attribute(s, public, C.CKA_EC_POINT)
    assert point == der_octet_string(point[2:]) and len(point) == size + 2
    assert raw.attribute(s, public, C.CKA_KEY_TYPE) == C.CKK_EC_MONTGOMERY.to_bytes(8, "little")
    spki = raw.attribute(s, private, C.CKA_PUBLIC_KEY_INFO)
    assert spki == raw.attribute(s, public, C.CKA_PUBLIC_KEY_INFO)
    peer = cls.generate()
    peer_public = peer.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    z = derive(s, private, peer_public)
    assert z == peer.exchange(serialization.load_der_public_key(spki))
    assert derive(s, private, peer_public, kdf=C.CKD_SHA512_KDF, shared=b"x",
                  template={Attribute.VALUE_LEN: 32}) == ecdh.x963_kdf(hashes.SHA512(), z, b"x", 32)


def test_montgomery_small_order_point_refused(s):
    base = _montgomery_private(s, X25519_OID, bytes.fromhex(ALICE))
    with raw_rv(C.CKR_MECHANISM_PARAM_INVALID):
        derive(s, base, b"\0" * 32)


def test_montgomery_refuses_cofactor_mechanism_and_ecdsa(s):
    base = _montgomery_private(s, X25519_OID, bytes.fromhex(ALICE))
    with raw_rv(C.CKR_KEY_TYPE_INCONSISTENT):
        derive(s, base, bytes.fromhex(BOB_PUBLIC), mechanism=Mechanism.ECDH1_COFACTOR_DERIVE)
    with raw_rv(C.CKR_CURVE_NOT_SUPPORTED):
        raw.generate_keypair(s, C.CKM_EC_MONTGOMERY_KEY_PAIR_GEN, {Attribute.EC_PARAMS: bytes.fromhex("06032b6570")},
                             {})


# -- bad keys and parameters ------------------------------------------------------------------
@pytest.fixture(scope="module")
def p256(s):
    mine = ec.generate_private_key(ec.SECP256R1())
    base = ec_private(s, OID["P-256"], mine.private_numbers().private_value.to_bytes(32, "big"))
    return base, _uncompressed(ec.generate_private_key(ec.SECP256R1()).public_key())


def test_wrong_key_type(s, p256):
    _, peer = p256
    _, rsa_private = s.generate_keypair(KeyType.RSA, 1024, store=False)
    with raw_rv(C.CKR_KEY_TYPE_INCONSISTENT):
        derive(s, rsa_private.handle, peer)
    _, ed_private = s.generate_keypair(KeyType.EC_EDWARDS, store=False, mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                                       public_template={Attribute.EC_PARAMS: bytes.fromhex("06032b6570")})
    with raw_rv(C.CKR_KEY_TYPE_INCONSISTENT):
        derive(s, ed_private.handle, peer)


def test_public_key_as_base_refused(s, p256):
    _, peer = p256
    public = raw.create_object(s, {Attribute.CLASS: C.CKO_PUBLIC_KEY, Attribute.KEY_TYPE: C.CKK_EC,
                                   Attribute.EC_PARAMS: OID["P-256"], Attribute.EC_POINT: peer,
                                   Attribute.DERIVE: True, Attribute.TOKEN: False})
    with raw_rv(C.CKR_KEY_TYPE_INCONSISTENT):
        derive(s, public, peer)


def test_missing_derive_flag(s):
    key = ec.generate_private_key(ec.SECP256R1())
    base = ec_private(s, OID["P-256"], key.private_numbers().private_value.to_bytes(32, "big"),
                      extra={Attribute.DERIVE: False})
    with raw_rv(C.CKR_KEY_FUNCTION_NOT_PERMITTED):
        derive(s, base.handle, _uncompressed(key.public_key()))
    x = _montgomery_private(s, X25519_OID, bytes.fromhex(ALICE), derive_flag=False)
    with raw_rv(C.CKR_KEY_FUNCTION_NOT_PERMITTED):
        derive(s, x, bytes.fromhex(BOB_PUBLIC))


@pytest.mark.parametrize("kdf, shared, public", [
    (C.CKD_NULL, b"shared", None),                   # CKD_NULL takes no shared data
    (C.CKD_SHA1_KDF_ASN1, None, None),               # KDFs we do not implement
    (C.CKD_SHA256_KDF_SP800, None, None),
    (0x4242, None, None),
    (C.CKD_NULL, None, b"\4" + b"\1" * 64),          # not on the curve
    (C.CKD_NULL, None, b"\4" + b"\1" * 10),          # wrong length
    (C.CKD_NULL, None, b""),                          # missing
], ids=["null-shared", "asn1", "sp800", "unknown", "off-curve", "short", "empty"])
def test_bad_params(s, p256, kdf, shared, public):
    base, peer = p256
    with raw_rv(C.CKR_MECHANISM_PARAM_INVALID):
        derive(s, base.handle, public if public is not None else peer, kdf=kdf, shared=shared,
               template={Attribute.VALUE_LEN: 16})


def test_malformed_param_struct(s, p256):
    base, _ = p256
    with raw_rv(C.CKR_MECHANISM_PARAM_INVALID):
        raw.derive(s, Mechanism.ECDH1_DERIVE, b"\1" * 12, base.handle, SECRET)


def test_template_problems(s, p256):
    base, peer = p256
    with raw_rv(C.CKR_TEMPLATE_INCONSISTENT):  # longer than Z without a KDF
        derive(s, base.handle, peer, template={Attribute.VALUE_LEN: 33})
    with raw_rv(C.CKR_TEMPLATE_INCOMPLETE):  # a KDF needs to be told the length
        derive(s, base.handle, peer, kdf=C.CKD_SHA256_KDF)
    with raw_rv(C.CKR_TEMPLATE_INCOMPLETE):  # no key type
        raw.derive(s, Mechanism.ECDH1_DERIVE, raw.ecdh1_params(C.CKD_NULL, None, peer)[0], base.handle,
                   {Attribute.CLASS: C.CKO_SECRET_KEY})
    with raw_rv(C.CKR_ATTRIBUTE_VALUE_INVALID):  # 20 bytes is no AES key
        derive(s, base.handle, peer, template={Attribute.KEY_TYPE: C.CKK_AES, Attribute.VALUE_LEN: 20})
