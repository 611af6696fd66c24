"""Keys on the curves of RFC 7748 and RFC 8032 (Ed25519, Ed448, X25519, X448).

These keys are byte strings, not points and scalars ("octet key pairs" in
RFC 8410's words): CKA_VALUE holds the raw private key, CKA_EC_POINT the raw
public key wrapped in a DER OCTET STRING (the form OpenSSL and pkcs11-tool
read; a raw value is accepted on import), CKA_EC_PARAMS the curve's OID or its
name as a PrintableString (PKCS#11 3.0 §2.3.5, §2.3.7). The Edwards family
(eddsa.py) and the Montgomery family (ecdh.py) each register one key type
from this module.
"""

from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519, x448, x25519

from ... import constants as C
from ...errors import CKRError
from . import KeyType, remembered
from . import pkcs8
from .ec import der_octet_string, parse_octet_string


@dataclass(frozen=True)
class Curve:
    name: str
    oid: bytes            # DER of the OID, the canonical CKA_EC_PARAMS
    names: tuple          # PrintableString names CKA_EC_PARAMS may carry
    bits: int             # key size as CK_MECHANISM_INFO and CKA_KEY_SIZE count it
    public_len: int
    private_len: int
    private_cls: type
    public_cls: type


ED25519 = Curve("Ed25519", bytes.fromhex("06032b6570"), ("edwards25519",), 255, 32, 32,
                ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)
ED448 = Curve("Ed448", bytes.fromhex("06032b6571"), ("edwards448",), 448, 57, 57,
              ed448.Ed448PrivateKey, ed448.Ed448PublicKey)
X25519 = Curve("X25519", bytes.fromhex("06032b656e"), ("curve25519",), 255, 32, 32,
               x25519.X25519PrivateKey, x25519.X25519PublicKey)
X448 = Curve("X448", bytes.fromhex("06032b656f"), ("curve448",), 448, 56, 56,
             x448.X448PrivateKey, x448.X448PublicKey)
EDWARDS = (ED25519, ED448)
MONTGOMERY = (X25519, X448)


def curve_of(params, curves):
    """CKA_EC_PARAMS (OID or PrintableString) -> the Curve among `curves`."""
    params = bytes(params)
    for curve in curves:
        if params == curve.oid:
            return curve
    if params[:1] == b"\x13" and len(params) >= 2 and params[1] == len(params) - 2:
        name = params[2:].decode("ascii", "replace")
        for curve in curves:
            if name in curve.names:
                return curve
    raise CKRError(C.CKR_CURVE_NOT_SUPPORTED, "curve not supported by this key type")


def raw_public(value, curve):
    """CKA_EC_POINT or public data, DER OCTET STRING or raw -> the raw public key."""
    value = bytes(value)
    if len(value) == curve.public_len:
        return value
    inner = parse_octet_string(value)
    if inner is not None and len(inner) == curve.public_len:
        return inner
    raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, f"{curve.name} public key must be {curve.public_len} bytes")


def _load_public(curve, raw):
    try:
        return curve.public_cls.from_public_bytes(raw)
    except ValueError:
        raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, f"not a valid {curve.name} public key") from None


def _load_private(curve, raw):
    if len(raw) != curve.private_len:
        raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, f"{curve.name} private key must be {curve.private_len} bytes")
    try:
        return curve.private_cls.from_private_bytes(raw)
    except ValueError:
        raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, f"not a valid {curve.name} private key") from None


def public_key(key, curves):
    def load(attrs):
        curve = curve_of(attrs[C.CKA_EC_PARAMS], curves)
        return curve, _load_public(curve, raw_public(attrs[C.CKA_EC_POINT], curve))
    return remembered(key, "okp-public", load)


def private_key(key, curves):
    def load(attrs):
        curve = curve_of(attrs[C.CKA_EC_PARAMS], curves)
        return curve, _load_private(curve, attrs[C.CKA_VALUE])
    return remembered(key, "okp-private", load)


def _raw(public):
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _spki(public):
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate(curves, public_template, private_template):
    """-> (curve, public material, private material) for C_GenerateKeyPair."""
    params = public_template.get(C.CKA_EC_PARAMS)
    if params is None:
        raise CKRError(C.CKR_TEMPLATE_INCOMPLETE, "CKA_EC_PARAMS missing")
    if private_template.get(C.CKA_EC_PARAMS, params) != params:
        raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, "CKA_EC_PARAMS differ between the templates")
    curve = curve_of(params, curves)
    private = curve.private_cls.generate()
    raw_private = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                        serialization.NoEncryption())
    return (curve, {C.CKA_EC_POINT: der_octet_string(_raw(private.public_key()))},
            {C.CKA_EC_PARAMS: params, C.CKA_VALUE: raw_private})


def key_type(ckk, curves):
    """The KeyType of CKK_EC_EDWARDS or CKK_EC_MONTGOMERY over `curves`."""

    def complete(cls, attrs):
        curve = curve_of(attrs[C.CKA_EC_PARAMS], curves)
        if cls == C.CKO_PUBLIC_KEY:
            raw = raw_public(attrs[C.CKA_EC_POINT], curve)
            public = _load_public(curve, raw)
            attrs[C.CKA_EC_POINT] = der_octet_string(raw)
        else:
            public = _load_private(curve, attrs[C.CKA_VALUE]).public_key()
        attrs[C.CKA_PUBLIC_KEY_INFO] = _spki(public)

    def export(cls, attrs):
        curve = curve_of(attrs[C.CKA_EC_PARAMS], curves)
        return pkcs8.export(_load_private(curve, attrs[C.CKA_VALUE]))

    def load(cls, blob):
        private = pkcs8.load(cls, blob, tuple(curve.private_cls for curve in curves), "this type's")
        for curve in curves:
            if isinstance(private, curve.private_cls):
                return {C.CKA_EC_PARAMS: curve.oid,
                        C.CKA_VALUE: private.private_bytes(serialization.Encoding.Raw,
                                                           serialization.PrivateFormat.Raw,
                                                           serialization.NoEncryption())}
        raise CKRError(C.CKR_WRAPPED_KEY_INVALID, "not a key of this key type")

    return KeyType(
        ckk=ckk,
        attrs={C.CKO_PUBLIC_KEY: frozenset({C.CKA_EC_PARAMS, C.CKA_EC_POINT}),
               C.CKO_PRIVATE_KEY: frozenset({C.CKA_EC_PARAMS, C.CKA_VALUE})},
        required={C.CKO_PUBLIC_KEY: (C.CKA_EC_PARAMS, C.CKA_EC_POINT),
                  C.CKO_PRIVATE_KEY: (C.CKA_EC_PARAMS, C.CKA_VALUE)},
        complete=complete,
        size=lambda attrs: curve_of(attrs[C.CKA_EC_PARAMS], curves).bits,
        export=export,
        load=load,
    )
