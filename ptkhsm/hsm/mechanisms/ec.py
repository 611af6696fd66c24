"""Elliptic curves over prime fields: key pairs and ECDSA on P-192, P-224, P-256, P-384,
P-521 and secp256k1 (P-192 and P-224 as PTK-C offers them; the weakest accepted
security level, 96 bits, sits just above RSA-1024's)."""

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from ... import constants as C
from ...errors import CKRError
from . import Buffered, HashThenSign, KeyType, Row, crypto_errors, register, register_key_type, remembered
from . import pkcs8
from .der import asn1
from .digest import HASHES

# DER of the namedCurve OIDs, and the names a PrintableString CKA_EC_PARAMS may carry.
CURVES = {
    bytes.fromhex("06082a8648ce3d030101"): ec.SECP192R1,
    bytes.fromhex("06052b81040021"): ec.SECP224R1,
    bytes.fromhex("06082a8648ce3d030107"): ec.SECP256R1,
    bytes.fromhex("06052b81040022"): ec.SECP384R1,
    bytes.fromhex("06052b81040023"): ec.SECP521R1,
    bytes.fromhex("06052b8104000a"): ec.SECP256K1,
}
CURVE_NAMES = {"prime192v1": ec.SECP192R1, "secp192r1": ec.SECP192R1, "P-192": ec.SECP192R1,
               "secp224r1": ec.SECP224R1, "P-224": ec.SECP224R1,
               "prime256v1": ec.SECP256R1, "secp256r1": ec.SECP256R1, "P-256": ec.SECP256R1,
               "secp384r1": ec.SECP384R1, "P-384": ec.SECP384R1,
               "secp521r1": ec.SECP521R1, "P-521": ec.SECP521R1, "secp256k1": ec.SECP256K1}
_OID_OF = {curve: oid for oid, curve in CURVES.items()}


def der_octet_string(data):
    return asn1().core.OctetString(data).dump()


def parse_octet_string(der):
    """DER OCTET STRING -> contents, or None if `der` is not exactly one."""
    try:
        return asn1().core.OctetString.load(der, strict=True).native
    except ValueError:
        return None


def curve_of(params):
    curve = CURVES.get(bytes(params))
    if curve is None and params[:1] == b"\x13":  # PrintableString
        curve = CURVE_NAMES.get(params[2:].decode("ascii", "replace"))
    if curve is None:
        raise CKRError(C.CKR_CURVE_NOT_SUPPORTED, "curve not supported")
    return curve()


def point_bytes(ec_point):
    """CKA_EC_POINT as stored (DER OCTET STRING) or given raw -> the encoded point."""
    inner = parse_octet_string(ec_point)
    return inner if inner is not None and inner[:1] in (b"\2", b"\3", b"\4") else ec_point


def _public(attrs):
    curve = curve_of(attrs[C.CKA_EC_PARAMS])
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point_bytes(attrs[C.CKA_EC_POINT]))
    except ValueError:
        raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, "CKA_EC_POINT is not on the curve") from None


def public_key(key):
    return remembered(key, "ec-public", _public)


def private_key(key):
    return remembered(key, "ec-private", _private)


def _private(attrs):
    curve = curve_of(attrs[C.CKA_EC_PARAMS])
    try:
        return ec.derive_private_key(int.from_bytes(attrs[C.CKA_VALUE], "big"), curve)
    except ValueError:
        raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, "CKA_VALUE is not a valid scalar") from None


def _encoded_point(public):
    return public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def _spki(public):
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _scalar(private):
    size = (private.curve.key_size + 7) // 8
    return private.private_numbers().private_value.to_bytes(size, "big")


def _complete(cls, attrs):
    if cls == C.CKO_PUBLIC_KEY:
        curve = curve_of(attrs[C.CKA_EC_PARAMS])
        try:
            public = ec.EllipticCurvePublicKey.from_encoded_point(curve, point_bytes(attrs[C.CKA_EC_POINT]))
        except ValueError:
            raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, "CKA_EC_POINT is not on the curve") from None
        attrs[C.CKA_EC_POINT] = der_octet_string(_encoded_point(public))
    else:
        public = _private(attrs).public_key()
    attrs[C.CKA_PUBLIC_KEY_INFO] = _spki(public)


def _export(cls, attrs):
    return pkcs8.export(_private(attrs))


def _load(cls, blob):
    private = pkcs8.load(cls, blob, ec.EllipticCurvePrivateKey, "EC")
    if type(private.curve) not in _OID_OF:
        raise CKRError(C.CKR_WRAPPED_KEY_INVALID, "not an EC key on a supported curve")
    return {C.CKA_EC_PARAMS: _OID_OF[type(private.curve)], C.CKA_VALUE: _scalar(private)}


register_key_type(KeyType(
    ckk=C.CKK_EC,
    attrs={C.CKO_PUBLIC_KEY: frozenset({C.CKA_EC_PARAMS, C.CKA_EC_POINT}),
           C.CKO_PRIVATE_KEY: frozenset({C.CKA_EC_PARAMS, C.CKA_VALUE})},
    required={C.CKO_PUBLIC_KEY: (C.CKA_EC_PARAMS, C.CKA_EC_POINT),
              C.CKO_PRIVATE_KEY: (C.CKA_EC_PARAMS, C.CKA_VALUE)},
    complete=_complete,
    size=lambda attrs: curve_of(attrs[C.CKA_EC_PARAMS]).key_size,
    export=_export,
    load=_load,
))

_BY_SIZE = {20: hashes.SHA1, 28: hashes.SHA224, 32: hashes.SHA256, 48: hashes.SHA384, 64: hashes.SHA512}
# cryptography's signature-algorithm objects hold no state: made once, not per signature
# (their constructors type-check their arguments, a tenth of a P-256 signature's time).
_ECDSA_OF = {}


def _ecdsa(algorithm):
    """ec.ECDSA(Prehashed(algorithm)) for a hash algorithm class, shared."""
    signer = _ECDSA_OF.get(algorithm)
    if signer is None:
        signer = _ECDSA_OF[algorithm] = ec.ECDSA(utils.Prehashed(algorithm()))
    return signer


def _prehashed(curve, data):
    """CKM_ECDSA signs any input: reduce it as ECDSA does (leftmost order-bits), then
    present it to OpenSSL as a digest it will read as the same number: one no longer
    than the order, or a longer one shifted so that its leftmost order-bits are it."""
    bits = curve.key_size
    e = int.from_bytes(data, "big")
    if len(data) * 8 > bits:
        e >>= len(data) * 8 - bits
    need = (e.bit_length() + 7) // 8
    for size, algorithm in _BY_SIZE.items():
        if need <= size and size * 8 <= bits:
            return e.to_bytes(size, "big"), _ecdsa(algorithm)
        if size * 8 > bits:
            return (e << (size * 8 - bits)).to_bytes(size, "big"), _ecdsa(algorithm)
    raise CKRError(C.CKR_DATA_LEN_RANGE, "input too long for CKM_ECDSA on this curve")


def _order_bytes(curve):
    return (curve.key_size + 7) // 8


def _sign_digest(private, digest, signer):
    r, s = utils.decode_dss_signature(private.sign(digest, signer))
    n = _order_bytes(private.curve)
    return r.to_bytes(n, "big") + s.to_bytes(n, "big")


def _verify_digest(public, digest, signer, signature):
    n = _order_bytes(public.curve)
    if len(signature) != 2 * n:
        raise CKRError(C.CKR_SIGNATURE_LEN_RANGE, f"signature of {len(signature)} bytes, {2 * n} expected")
    der = utils.encode_dss_signature(int.from_bytes(signature[:n], "big"), int.from_bytes(signature[n:], "big"))
    with crypto_errors():
        public.verify(der, digest, signer)


class Ecdsa:
    def generate_pair(self, row, param, public_template, private_template):
        params = public_template.get(C.CKA_EC_PARAMS)
        if params is None:
            raise CKRError(C.CKR_TEMPLATE_INCOMPLETE, "CKA_EC_PARAMS missing")
        if private_template.get(C.CKA_EC_PARAMS, params) != params:
            raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, "CKA_EC_PARAMS differ between the templates")
        curve = curve_of(params)
        private = ec.generate_private_key(curve)
        public = {C.CKA_EC_POINT: der_octet_string(_encoded_point(private.public_key()))}
        return C.CKK_EC, public, {C.CKA_EC_PARAMS: params, C.CKA_VALUE: _scalar(private)}

    def sign(self, row, key, param):
        private = private_key(key)
        digest = row.info.get("hash")
        if digest is None:
            return Buffered(lambda data: _sign_digest(private, *_prehashed(private.curve, data)))
        signer = _ecdsa(digest)
        return HashThenSign(digest(), lambda d: _sign_digest(private, d, signer))

    def verify(self, row, key, param):
        public = public_key(key)
        digest = row.info.get("hash")
        if digest is None:
            return Buffered(lambda data, sig: _verify_digest(public, *_prehashed(public.curve, data), sig))
        signer = _ecdsa(digest)
        return HashThenSign(digest(), lambda d, sig: _verify_digest(public, d, signer, sig))


_ECDSA = Ecdsa()
_KEYS = (C.CKK_EC,)
_SIGN = C.CKF_SIGN | C.CKF_VERIFY | C.CKF_EC_F_P | C.CKF_EC_NAMEDCURVE | C.CKF_EC_UNCOMPRESS
MIN_BITS, MAX_BITS = 192, 521
register(
    Row(C.CKM_EC_KEY_PAIR_GEN, _ECDSA, C.CKF_GENERATE_KEY_PAIR | C.CKF_EC_F_P | C.CKF_EC_NAMEDCURVE
        | C.CKF_EC_UNCOMPRESS, (), MIN_BITS, MAX_BITS),
    Row(C.CKM_ECDSA, _ECDSA, _SIGN, _KEYS, MIN_BITS, MAX_BITS),
    *(Row(ckm, _ECDSA, _SIGN, _KEYS, MIN_BITS, MAX_BITS, info={"hash": HASHES[digest]})
      for ckm, digest in ((C.CKM_ECDSA_SHA1, C.CKM_SHA_1), (C.CKM_ECDSA_SHA224, C.CKM_SHA224),
                          (C.CKM_ECDSA_SHA256, C.CKM_SHA256), (C.CKM_ECDSA_SHA384, C.CKM_SHA384),
                          (C.CKM_ECDSA_SHA512, C.CKM_SHA512))),
)
