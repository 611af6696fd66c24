"""Elliptic-curve Diffie-Hellman: CKM_ECDH1_DERIVE and CKM_ECDH1_COFACTOR_DERIVE
(PKCS#11 3.0 §2.3.17-18) over CKK_EC keys, and over CKK_EC_MONTGOMERY keys
(X25519, X448, with CKM_EC_MONTGOMERY_KEY_PAIR_GEN).

The peer's public data is the encoded point (or the raw u-coordinate for
X25519/X448), or the same wrapped in a DER OCTET STRING. Every curve we
support on CKK_EC has cofactor 1, so the cofactor variant computes the same Z.

The derived key is a secret key of the template's CKA_KEY_TYPE, of the length
`derived.type_and_length` gives (the rule every derivation shares: with
CKD_NULL a generic secret may take the whole shared secret). CKD_NULL
truncates Z by removing bytes from its leading end, as the spec says; the
ANSI X9.63 KDFs (CKD_SHA*_KDF, SHA-1, SHA-2 and SHA-3) produce exactly the
length asked for, with pSharedData as the SharedInfo.
"""

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec as crypto_ec
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

from ... import constants as C
from ... import mechparams as P
from ...errors import CKRError
from . import Row, derived, okp, register, register_key_type
from . import ec as ec_family

register_key_type(okp.key_type(C.CKK_EC_MONTGOMERY, okp.MONTGOMERY))

KDF_HASHES = {
    C.CKD_SHA1_KDF: hashes.SHA1, C.CKD_SHA224_KDF: hashes.SHA224, C.CKD_SHA256_KDF: hashes.SHA256,
    C.CKD_SHA384_KDF: hashes.SHA384, C.CKD_SHA512_KDF: hashes.SHA512,
    C.CKD_SHA3_224_KDF: hashes.SHA3_224, C.CKD_SHA3_256_KDF: hashes.SHA3_256,
    C.CKD_SHA3_384_KDF: hashes.SHA3_384, C.CKD_SHA3_512_KDF: hashes.SHA3_512,
}


def x963_kdf(algorithm, z, shared_info, length):
    """ANSI X9.63 KDF (SEC 1 §3.6.1): Hash(Z || counter || SharedInfo), counter from 1."""
    return X963KDF(algorithm=algorithm, length=length, sharedinfo=shared_info or None).derive(z)


def _param(param):
    if not isinstance(param, P.Ecdh1Params):
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "ECDH needs CK_ECDH1_DERIVE_PARAMS")
    if param.kdf == C.CKD_NULL:
        if param.shared_data:
            raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "CKD_NULL takes no shared data")
    elif param.kdf not in KDF_HASHES:
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, f"KDF {param.kdf:#x} not supported")
    if not param.public_data:
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "public data missing")
    return param


def _ec_peer(curve, data):
    """The peer's point: X9.62 encoded (uncompressed or compressed), raw or in an OCTET STRING."""
    n = (curve.key_size + 7) // 8
    if not (len(data) in (1 + n, 1 + 2 * n) and data[:1] in (b"\2", b"\3", b"\4")):
        inner = ec_family.parse_octet_string(data)
        if inner is not None:
            data = inner
    try:
        return crypto_ec.EllipticCurvePublicKey.from_encoded_point(curve, data)
    except ValueError:
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "public data is not a point on the key's curve") from None


def _shared_secret(key, public_data):
    if key.attrs[C.CKA_CLASS] != C.CKO_PRIVATE_KEY:
        raise CKRError(C.CKR_KEY_TYPE_INCONSISTENT, "ECDH derives from a private key")
    if key.attrs[C.CKA_KEY_TYPE] == C.CKK_EC:
        private = ec_family.private_key(key)
        peer = _ec_peer(private.curve, public_data)
        return private.exchange(crypto_ec.ECDH(), peer)
    curve, private = okp.private_key(key, okp.MONTGOMERY)
    try:
        peer = curve.public_cls.from_public_bytes(okp.raw_public(public_data, curve))
    except (CKRError, ValueError):
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, f"public data is not a {curve.name} public key") from None
    try:
        return private.exchange(peer)
    except ValueError:  # an all-zero result: the peer sent a small-order point (RFC 7748 §6)
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "public data is a small-order point") from None


class Ecdh:
    def derive(self, row, base_key, param, template):
        param = _param(param)
        z = _shared_secret(base_key, param.public_data)
        whole = len(z) if param.kdf == C.CKD_NULL else None
        ckk, length = derived.type_and_length(template, whole, needs_type=True)
        if param.kdf == C.CKD_NULL:
            value = z[len(z) - length:]
        else:
            value = x963_kdf(KDF_HASHES[param.kdf](), z, param.shared_data, length)
        return C.CKO_SECRET_KEY, ckk, {C.CKA_VALUE: derived.value(ckk, value)}

    def generate_pair(self, row, param, public_template, private_template):
        _, public, private = okp.generate(okp.MONTGOMERY, public_template, private_template)
        return C.CKK_EC_MONTGOMERY, public, private


_ECDH = Ecdh()
_EC_FLAGS = C.CKF_EC_F_P | C.CKF_EC_NAMEDCURVE | C.CKF_EC_UNCOMPRESS | C.CKF_EC_COMPRESS
MIN_BITS, MAX_BITS = min(ec_family.MIN_BITS, okp.X25519.bits), ec_family.MAX_BITS
register(
    Row(C.CKM_EC_MONTGOMERY_KEY_PAIR_GEN, _ECDH, C.CKF_GENERATE_KEY_PAIR, (), okp.X25519.bits, okp.X448.bits),
    Row(C.CKM_ECDH1_DERIVE, _ECDH, C.CKF_DERIVE | _EC_FLAGS, (C.CKK_EC, C.CKK_EC_MONTGOMERY), MIN_BITS, MAX_BITS),
    Row(C.CKM_ECDH1_COFACTOR_DERIVE, _ECDH, C.CKF_DERIVE | _EC_FLAGS, (C.CKK_EC,),
        ec_family.MIN_BITS, ec_family.MAX_BITS),
)
