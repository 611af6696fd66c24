"""EC keys and ECDSA through the real .so: key pairs on P-192/P-224/P-256/P-384/P-521/secp256k1 by
OID and by name, CKA_EC_POINT as a DER OCTET STRING, CKA_PUBLIC_KEY_INFO on both halves,
NIST CAVP SigVer (P/F) and the secp256k1 SigGen vectors, signatures made inside and
checked by `cryptography`, and the error codes of bad keys and parameters.
"""

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from pkcs11 import Attribute, KeyType, Mechanism

from ptkhsm import constants as C

from . import raw
from .conftest import der_octet_string, ec_private, ec_public, public_key_info, raw_rv, unmapped
from .vectors import load_nist

OID = {"P-192": "06082a8648ce3d030101", "P-224": "06052b81040021", "P-256": "06082a8648ce3d030107",
       "P-384": "06052b81040022", "P-521": "06052b81040023", "K-256": "06052b8104000a"}
CURVE = {"P-192": ec.SECP192R1, "P-224": ec.SECP224R1, "P-256": ec.SECP256R1, "P-384": ec.SECP384R1,
         "P-521": ec.SECP521R1, "K-256": ec.SECP256K1}
NAMES = {"P-192": ("prime192v1",), "P-224": ("secp224r1",), "P-256": ("prime256v1", "secp256r1"),
         "P-384": ("secp384r1",), "P-521": ("secp521r1",), "K-256": ("secp256k1",)}
ECDSA_HASH = {"SHA-1": (Mechanism.ECDSA_SHA1, hashes.SHA1), "SHA-224": (Mechanism.ECDSA_SHA224, hashes.SHA224),
              "SHA-256": (Mechanism.ECDSA_SHA256, hashes.SHA256),
              "SHA-384": (Mechanism.ECDSA_SHA384, hashes.SHA384),
              "SHA-512": (Mechanism.ECDSA_SHA512, hashes.SHA512)}


def printable(name):
    return bytes([0x13, len(name)]) + name.encode()


def params_variants():
    for curve, oid in OID.items():
        yield curve, bytes.fromhex(oid), "oid"
        for name in NAMES[curve]:
            yield curve, printable(name), name


PARAMS = list(params_variants())


def _point_of(public_crypto):
    return public_crypto.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


@pytest.mark.parametrize("curve, params, how", PARAMS, ids=[f"{c}-{h}" for c, _, h in PARAMS])
def test_generate(s, curve, params, how):
    public, private = s.generate_keypair(KeyType.EC, store=False, public_template={Attribute.EC_PARAMS: params})
    assert public[Attribute.EC_PARAMS] == params and private[Attribute.EC_PARAMS] == params
    point = public[Attribute.EC_POINT]
    spki = public_key_info(s, public)
    loaded = serialization.load_der_public_key(spki)
    assert isinstance(loaded.curve, CURVE[curve])
    assert point == der_octet_string(_point_of(loaded))  # DER OCTET STRING of the uncompressed point
    assert public_key_info(s, private) == spki
    assert private[Attribute.KEY_GEN_MECHANISM] == Mechanism.EC_KEY_PAIR_GEN and private[Attribute.LOCAL]
    with pytest.raises(pkcs11.AttributeSensitive):
        private[Attribute.VALUE]
    signature = private.sign(b"message", mechanism=Mechanism.ECDSA_SHA256)
    half = len(signature) // 2
    r, s_ = int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
    loaded.verify(utils.encode_dss_signature(r, s_), b"message", ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("params", [bytes.fromhex("06052b8104001f"),  # secp192k1
                                    bytes.fromhex("06092b2403030208010107"),  # brainpoolP256r1
                                    printable("edwards25519"), printable("nonsense"), b"\x05\x00"],
                         ids=["secp192k1", "brainpool", "edwards25519", "nonsense", "NULL"])
def test_unsupported_curves(s, params):
    with unmapped(C.CKR_CURVE_NOT_SUPPORTED):
        s.generate_keypair(KeyType.EC, store=False, public_template={Attribute.EC_PARAMS: params})


def test_generate_needs_params(s):
    with pytest.raises(pkcs11.TemplateIncomplete):
        s.generate_keypair(KeyType.EC, store=False)


def test_mechanism_info(token):
    info = token.slot.get_mechanism_info(Mechanism.ECDSA)
    assert (info.min_key_length, info.max_key_length) == (192, 521)
    for flag in (pkcs11.MechanismFlag.EC_F_P, pkcs11.MechanismFlag.EC_NAMEDCURVE,
                 pkcs11.MechanismFlag.EC_UNCOMPRESS, pkcs11.MechanismFlag.SIGN, pkcs11.MechanismFlag.VERIFY):
        assert info.flags & flag


def test_import_private_derives_public_info(s):
    """secp256k1 SigGen vectors: an imported scalar gives the published public key, and the
    published signatures verify (ECDSA-SHA* over the message; also CKM_ECDSA over its digest)."""
    records = load_nist("asymmetric", "ECDSA", "SECP256K1", "SigGen.txt")
    assert len(records) >= 10
    for r in records:
        curve, hash_name = r["section"].split(",")
        assert curve == "K-256"
        mechanism, algorithm = ECDSA_HASH[hash_name]
        params = bytes.fromhex(OID["K-256"])
        private = ec_private(s, params, bytes.fromhex(r["d"].rjust(64, "0")))
        expected = ec.EllipticCurvePublicNumbers(int(r["Qx"], 16), int(r["Qy"], 16), ec.SECP256K1()).public_key()
        assert public_key_info(s, private) == expected.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        public = ec_public(s, params, der_octet_string(_point_of(expected)))
        message = bytes.fromhex(r["Msg"])
        signature = bytes.fromhex(r["R"].rjust(64, "0")) + bytes.fromhex(r["S"].rjust(64, "0"))
        assert public.verify(message, signature, mechanism=mechanism)
        digest = hashes.Hash(algorithm())
        digest.update(message)
        assert public.verify(digest.finalize(), signature, mechanism=Mechanism.ECDSA)
        assert not public.verify(message + b"\0", signature, mechanism=mechanism)


@pytest.mark.parametrize("curve", ["P-192", "P-224", "P-256", "P-384", "P-521"])
def test_sigver_cavp(s, curve):
    """FIPS 186-3 SigVer: each published verdict (P or F: message, key, R or S changed) is reproduced.
    EC_POINT is given raw here (the module accepts it and stores the DER form)."""
    records = [r for r in load_nist("asymmetric", "ECDSA", "FIPS_186-3", "SigVer.rsp")
               if r["section"].split(",")[0] == curve]
    assert len(records) == 75
    size = (CURVE[curve].key_size + 7) // 8
    for r in records:
        mechanism = ECDSA_HASH[r["section"].split(",")[1]][0]
        numbers = ec.EllipticCurvePublicNumbers(int(r["Qx"], 16), int(r["Qy"], 16), CURVE[curve]())
        try:
            point = _point_of(numbers.public_key())
        except ValueError:  # "Q changed" vectors may leave the curve
            assert r["Result"].startswith("F")
            continue
        public = ec_public(s, bytes.fromhex(OID[curve]), point)
        assert public[Attribute.EC_POINT] == der_octet_string(point)
        signature = int(r["R"], 16).to_bytes(size, "big") + int(r["S"], 16).to_bytes(size, "big")
        ok = public.verify(bytes.fromhex(r["Msg"]), signature, mechanism=mechanism)
        assert ok == r["Result"].startswith("P"), r["Result"]


@pytest.mark.parametrize("curve", list(OID))
def test_sign_inside_verify_outside(s, curve):
    public, private = s.generate_keypair(KeyType.EC, store=False,
                                         public_template={Attribute.EC_PARAMS: bytes.fromhex(OID[curve])})
    loaded = serialization.load_der_public_key(public_key_info(s, public))
    size = (CURVE[curve].key_size + 7) // 8
    data = b"sign inside, verify outside" * 3
    for mechanism, algorithm in ECDSA_HASH.values():
        signature = private.sign(data, mechanism=mechanism)
        assert len(signature) == 2 * size
        der = utils.encode_dss_signature(int.from_bytes(signature[:size], "big"),
                                         int.from_bytes(signature[size:], "big"))
        loaded.verify(der, data, ec.ECDSA(algorithm()))
        assert public.verify(data, signature, mechanism=mechanism)
        # multi-part gives a signature over the same message
        signature = private.sign(iter([data[:7], data[7:]]), mechanism=mechanism)
        assert public.verify(data, signature, mechanism=mechanism)
    # CKM_ECDSA over a digest, and over an input longer than the order (leftmost bits are used)
    digest = hashes.Hash(hashes.SHA512())
    digest.update(data)
    prehashed = digest.finalize()
    signature = private.sign(prehashed, mechanism=Mechanism.ECDSA)
    der = utils.encode_dss_signature(int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big"))
    loaded.verify(der, prehashed, ec.ECDSA(utils.Prehashed(hashes.SHA512())))


def test_wrong_key_type(s):
    public, private = s.generate_keypair(KeyType.RSA, 1024, store=False)
    with raw_rv(C.CKR_KEY_TYPE_INCONSISTENT):
        raw.init("C_SignInit", s, Mechanism.ECDSA_SHA256, None, private.handle)
    with raw_rv(C.CKR_KEY_TYPE_INCONSISTENT):
        raw.init("C_VerifyInit", s, Mechanism.ECDSA, None, public.handle)


def test_missing_usage_flag(s):
    key = ec.generate_private_key(ec.SECP256R1())
    value = key.private_numbers().private_value.to_bytes(32, "big")
    private = ec_private(s, bytes.fromhex(OID["P-256"]), value, extra={Attribute.SIGN: False})
    public = ec_public(s, bytes.fromhex(OID["P-256"]), _point_of(key.public_key()), extra={Attribute.VERIFY: False})
    with raw_rv(C.CKR_KEY_FUNCTION_NOT_PERMITTED):
        raw.init("C_SignInit", s, Mechanism.ECDSA_SHA256, None, private.handle)
    with raw_rv(C.CKR_KEY_FUNCTION_NOT_PERMITTED):
        raw.init("C_VerifyInit", s, Mechanism.ECDSA_SHA256, None, public.handle)


def test_ecdsa_takes_no_parameter(s):
    _, private = s.generate_keypair(KeyType.EC, store=False,
                                    public_template={Attribute.EC_PARAMS: bytes.fromhex(OID["P-256"])})
    with raw_rv(C.CKR_MECHANISM_PARAM_INVALID):
        raw.init("C_SignInit", s, Mechanism.ECDSA, b"\0" * 8, private.handle)


@pytest.mark.parametrize("curve", ["P-256", "P-521"])
def test_wrong_signature_length(s, curve):
    public, private = s.generate_keypair(KeyType.EC, store=False,
                                         public_template={Attribute.EC_PARAMS: bytes.fromhex(OID[curve])})
    signature = private.sign(b"m", mechanism=Mechanism.ECDSA_SHA256)
    raw.verify(s, Mechanism.ECDSA_SHA256, None, public.handle, b"m", signature)
    for bad in (signature[:-1], signature + b"\0", b""):
        with raw_rv(C.CKR_SIGNATURE_LEN_RANGE):
            raw.verify(s, Mechanism.ECDSA_SHA256, None, public.handle, b"m", bad)
    tampered = signature[:-1] + bytes([signature[-1] ^ 1])
    with raw_rv(C.CKR_SIGNATURE_INVALID):
        raw.verify(s, Mechanism.ECDSA_SHA256, None, public.handle, b"m", tampered)


def test_point_not_on_curve_refused(s):
    with pytest.raises(pkcs11.AttributeValueInvalid):
        ec_public(s, bytes.fromhex(OID["P-256"]), der_octet_string(b"\x04" + b"\x01" * 64))


def test_single_and_multi_part_do_not_mix(s):
    """C_SignFinal after a C_Sign length query (pkcs11-tool --test-ec does it) ends the
    operation with CKR_OPERATION_NOT_INITIALIZED instead of signing twice or signing nothing."""
    import ctypes
    _, private = s.generate_keypair(KeyType.EC, store=False,
                                    public_template={Attribute.EC_PARAMS: bytes.fromhex(OID["P-256"])})
    handle = raw.CK_ULONG(s.handle)
    for mechanism in (Mechanism.ECDSA_SHA256, Mechanism.ECDSA):
        mech = raw.CK_MECHANISM(mechanism, None, 0)
        raw.call("C_SignInit", handle, ctypes.byref(mech), raw.CK_ULONG(private.handle))
        size = raw.CK_ULONG(0)
        raw.call("C_Sign", handle, b"\1" * 32, raw.CK_ULONG(32), None, ctypes.byref(size))
        assert size.value == 64
        buffer = ctypes.create_string_buffer(64)
        with raw_rv(C.CKR_OPERATION_NOT_INITIALIZED):
            raw.call("C_SignFinal", handle, buffer, ctypes.byref(size))
        with raw_rv(C.CKR_OPERATION_NOT_INITIALIZED):  # the operation is over
            raw.call("C_Sign", handle, b"\1" * 32, raw.CK_ULONG(32), buffer, ctypes.byref(size))
        # and the other way round: C_Sign after C_SignUpdate
        raw.call("C_SignInit", handle, ctypes.byref(mech), raw.CK_ULONG(private.handle))
        raw.call("C_SignUpdate", handle, b"\1" * 32, raw.CK_ULONG(32))
        with raw_rv(C.CKR_OPERATION_NOT_INITIALIZED):
            raw.call("C_Sign", handle, b"\1" * 32, raw.CK_ULONG(32), buffer, ctypes.byref(size))
        raw.call("C_SignInit", handle, ctypes.byref(mech), raw.CK_ULONG(private.handle))
        size = raw.CK_ULONG(64)
        raw.call("C_Sign", handle, b"\1" * 32, raw.CK_ULONG(32), buffer, ctypes.byref(size))
