"""EdDSA with CKK_EC_EDWARDS keys through the real .so: key pairs by OID and by name,
CKA_EC_POINT as a DER OCTET STRING of the raw key, CKA_PUBLIC_KEY_INFO, the RFC 8032
vectors (deterministic, so signatures are compared byte for byte: Ed25519 from the
sign.input list that includes RFC 8032's tests, Ed448 from RFC 8032 §7.4), what
CK_EDDSA_PARAMS may ask for, and the error codes of bad keys and parameters.
"""

import struct

import pkcs11
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from ptkhsm import constants as C

from . import raw
from .conftest import der_octet_string, public_key_info, raw_rv, unmapped
from .vectors import hexbytes, load_nist, path

ED25519_OID = bytes.fromhex("06032b6570")
ED448_OID = bytes.fromhex("06032b6571")
PURE = (False, None)  # CK_EDDSA_PARAMS for pure EdDSA, as python-pkcs11 takes it
PURE_STRUCT = struct.pack("BxxxxxxxLP", 0, 0, 0)  # the same CK_EDDSA_PARAMS, as C lays it out
PRINTABLE = {"edwards25519": b"\x13\x0cedwards25519", "edwards448": b"\x13\x0aedwards448"}
CURVES = [("Ed25519", ED25519_OID, 32), ("Ed448", ED448_OID, 57),
          ("Ed25519-name", PRINTABLE["edwards25519"], 32), ("Ed448-name", PRINTABLE["edwards448"], 57)]


def _private(s, params, seed, extra=None):
    template = {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: KeyType.EC_EDWARDS,
                Attribute.EC_PARAMS: params, Attribute.VALUE: seed, Attribute.SIGN: True, Attribute.TOKEN: False}
    template.update(extra or {})
    return s.create_object(template)


def _public(s, params, point, extra=None):
    template = {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.EC_EDWARDS,
                Attribute.EC_PARAMS: params, Attribute.EC_POINT: point, Attribute.VERIFY: True,
                Attribute.TOKEN: False}
    template.update(extra or {})
    return s.create_object(template)


def _generate(s, params):
    return s.generate_keypair(KeyType.EC_EDWARDS, store=False, mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                              public_template={Attribute.EC_PARAMS: params})


@pytest.mark.parametrize("name, params, size", CURVES, ids=[c[0] for c in CURVES])
def test_generate(s, name, params, size):
    public, private = _generate(s, params)
    point = public[Attribute.EC_POINT]
    assert point[:2] == bytes([4, size]) and len(point) == size + 2
    spki = public_key_info(s, public)
    assert public_key_info(s, private) == spki
    loaded = serialization.load_der_public_key(spki)
    assert loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == point[2:]
    assert private[Attribute.KEY_TYPE] == KeyType.EC_EDWARDS
    with pytest.raises(pkcs11.AttributeSensitive):
        private[Attribute.VALUE]
    data = b"sign inside, verify outside"
    param = PURE if size == 57 else None  # Ed448 always takes CK_EDDSA_PARAMS
    signature = private.sign(data, mechanism=Mechanism.EDDSA, mechanism_param=param)
    assert len(signature) == 2 * size
    loaded.verify(signature, data)  # raises InvalidSignature on failure
    assert public.verify(data, signature, mechanism=Mechanism.EDDSA, mechanism_param=param)
    assert not public.verify(data + b"!", signature, mechanism=Mechanism.EDDSA, mechanism_param=param)


def test_mechanism_info(token):
    info = token.slot.get_mechanism_info(Mechanism.EDDSA)
    assert (info.min_key_length, info.max_key_length) == (255, 448)
    assert info.flags & pkcs11.MechanismFlag.SIGN and info.flags & pkcs11.MechanismFlag.VERIFY
    info = token.slot.get_mechanism_info(Mechanism.EC_EDWARDS_KEY_PAIR_GEN)
    assert info.flags & pkcs11.MechanismFlag.GENERATE_KEY_PAIR


def _ed25519_vectors(limit):
    """djb's sign.input (its first lines are RFC 8032 §7.1's tests 1-3): sk||pk : pk : msg : sig||msg."""
    out = []
    for line in path("asymmetric", "Ed25519", "sign.input").read_text().splitlines()[:limit]:
        sk, pk, msg, sig, _ = line.split(":")
        out.append((bytes.fromhex(sk)[:32], bytes.fromhex(pk), bytes.fromhex(msg), bytes.fromhex(sig)[:64]))
    return out


def test_ed25519_rfc8032(s):
    vectors = _ed25519_vectors(128)
    # RFC 8032 §7.1 TEST 1 leads the list
    assert vectors[0][1].hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert vectors[0][3].hex().startswith("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155")
    for seed, pk, msg, sig in vectors:
        private = _private(s, ED25519_OID, seed)
        assert public_key_info(s, private) == ed25519.Ed25519PublicKey.from_public_bytes(pk).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        assert private.sign(msg, mechanism=Mechanism.EDDSA) == sig
        public = _public(s, ED25519_OID, pk)  # raw form accepted, DER form stored
        assert public[Attribute.EC_POINT] == der_octet_string(pk)
        assert public.verify(msg, sig, mechanism=Mechanism.EDDSA)
        # CK_EDDSA_PARAMS asking for plain Ed25519 (no prehash, no context) is the same scheme
        assert private.sign(msg, mechanism=Mechanism.EDDSA, mechanism_param=(False, None)) == sig


def test_ed448_rfc8032(s):
    """RFC 8032 §7.4: every vector without a context signs byte for byte; the one with a
    context (Ed448 with context "foo") is refused, as cryptography cannot compute it."""
    records = load_nist("asymmetric", "Ed448", "rfc8032.txt")
    assert len(records) >= 8
    with_context = 0
    for r in records:
        seed, pk, msg, sig = (hexbytes(r[k]) for k in ("SECRET", "PUBLIC", "MESSAGE", "SIGNATURE"))
        private = _private(s, ED448_OID, seed)
        public = _public(s, ED448_OID, der_octet_string(pk))
        if "CONTEXT" in r:
            with_context += 1
            with pytest.raises(pkcs11.MechanismParamInvalid):
                private.sign(msg, mechanism=Mechanism.EDDSA, mechanism_param=(False, hexbytes(r["CONTEXT"])))
            with pytest.raises(pkcs11.MechanismParamInvalid):
                public.verify(msg, sig, mechanism=Mechanism.EDDSA, mechanism_param=(False, hexbytes(r["CONTEXT"])))
            continue
        assert private.sign(msg, mechanism=Mechanism.EDDSA, mechanism_param=PURE) == sig  # v3.0 §2.3.14
        assert public.verify(msg, sig, mechanism=Mechanism.EDDSA, mechanism_param=PURE)
        assert public_key_info(s, private) == ed448.Ed448PublicKey.from_public_bytes(pk).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert with_context == 1


@pytest.mark.parametrize("param", [(True, None), (True, b"ctx"), (False, b"ctx")],
                         ids=["ph", "ph-ctx", "ctx"])
@pytest.mark.parametrize("params", [ED25519_OID, ED448_OID], ids=["Ed25519", "Ed448"])
def test_prehash_and_context_refused(s, params, param):
    public, private = _generate(s, params)
    with pytest.raises(pkcs11.MechanismParamInvalid):
        private.sign(b"m", mechanism=Mechanism.EDDSA, mechanism_param=param)


def test_ed448_without_its_parameter(s):
    """Ed448 needs CK_EDDSA_PARAMS: without it C_SignInit / C_VerifyInit fail cleanly with
    CKR_MECHANISM_PARAM_INVALID and leave no operation behind."""
    public, private = _generate(s, ED448_OID)
    with raw_rv(C.CKR_MECHANISM_PARAM_INVALID):
        raw.init("C_SignInit", s, Mechanism.EDDSA, None, private.handle)
    with raw_rv(C.CKR_MECHANISM_PARAM_INVALID):
        raw.init("C_VerifyInit", s, Mechanism.EDDSA, None, public.handle)
    signature = private.sign(b"m", mechanism=Mechanism.EDDSA, mechanism_param=(False, None))
    assert public.verify(b"m", signature, mechanism=Mechanism.EDDSA, mechanism_param=(False, None))


def test_malformed_param(s):
    _, private = _generate(s, ED25519_OID)
    with raw_rv(C.CKR_MECHANISM_PARAM_INVALID):
        raw.init("C_SignInit", s, Mechanism.EDDSA, b"\0\0\0", private.handle)


def test_wrong_key_type(s):
    ec_public, ec_private = s.generate_keypair(KeyType.EC, store=False, public_template={
        Attribute.EC_PARAMS: bytes.fromhex("06082a8648ce3d030107")})
    with raw_rv(C.CKR_KEY_TYPE_INCONSISTENT):
        raw.init("C_SignInit", s, Mechanism.EDDSA, None, ec_private.handle)
    with raw_rv(C.CKR_KEY_TYPE_INCONSISTENT):
        raw.init("C_VerifyInit", s, Mechanism.EDDSA, None, ec_public.handle)
    _, ed_private = _generate(s, ED25519_OID)
    with raw_rv(C.CKR_KEY_TYPE_INCONSISTENT):
        raw.init("C_SignInit", s, Mechanism.ECDSA, None, ed_private.handle)


def test_missing_usage_flag(s):
    seed = bytes(range(32))
    private = _private(s, ED25519_OID, seed, extra={Attribute.SIGN: False})
    pk = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    public = _public(s, ED25519_OID, pk, extra={Attribute.VERIFY: False})
    with raw_rv(C.CKR_KEY_FUNCTION_NOT_PERMITTED):
        raw.init("C_SignInit", s, Mechanism.EDDSA, None, private.handle)
    with raw_rv(C.CKR_KEY_FUNCTION_NOT_PERMITTED):
        raw.init("C_VerifyInit", s, Mechanism.EDDSA, None, public.handle)


@pytest.mark.parametrize("params, size", [(ED25519_OID, 64), (ED448_OID, 114)], ids=["Ed25519", "Ed448"])
def test_wrong_signature_length(s, params, size):
    public, private = _generate(s, params)
    ed448 = params == ED448_OID
    signature = private.sign(b"m", mechanism=Mechanism.EDDSA, mechanism_param=PURE if ed448 else None)
    assert len(signature) == size
    raw_param = PURE_STRUCT if ed448 else None
    for bad in (signature[:-1], signature + b"\0"):
        with raw_rv(C.CKR_SIGNATURE_LEN_RANGE):
            raw.verify(s, Mechanism.EDDSA, raw_param, public.handle, b"m", bad)
    with raw_rv(C.CKR_SIGNATURE_INVALID):
        raw.verify(s, Mechanism.EDDSA, raw_param, public.handle, b"m", bytes([signature[0] ^ 1]) + signature[1:])


@pytest.mark.parametrize("params", [bytes.fromhex("06032b656e"), bytes.fromhex("06082a8648ce3d030107"),
                                    b"\x13\x0acurve25519"], ids=["X25519", "P-256", "curve25519"])
def test_other_curves_refused(s, params):
    with unmapped(C.CKR_CURVE_NOT_SUPPORTED):
        _generate(s, params)


def test_bad_key_material(s):
    with pytest.raises(pkcs11.AttributeValueInvalid):
        _private(s, ED25519_OID, b"\1" * 31)
    with pytest.raises(pkcs11.AttributeValueInvalid):
        _public(s, ED448_OID, b"\1" * 32)
