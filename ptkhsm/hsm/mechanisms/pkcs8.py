"""Private keys as C_WrapKey carries them: PKCS#8 DER, one path for every asymmetric family.

Finite-field DH keys are read here with asn1crypto (`dh_numbers`), not by
`cryptography`: cryptography 50 deprecates FFDH and warns each time it loads such
a key, and silencing that would change the process's warning filters, which an
interpreter shared with the host owns. `load` refuses them, so `cryptography`
never sees one.
"""

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ... import constants as C
from ...errors import CKRError
from .der import asn1

PKCS3_DH = "1.2.840.113549.1.3.1"   # dhKeyAgreement: DHParameter (p, g [, l])
X942_DH = "1.2.840.10046.2.1"       # dhpublicnumber: DomainParameters (p, g, q, ...), OpenSSL's choice
FINITE_FIELD_DH = (PKCS3_DH, X942_DH)


def export(private):
    return private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


def _info(blob, what):
    """-> (algorithm OID, parameters DER or None, the private key's bytes)."""
    try:
        info = asn1().PrivateKeyInfo.load(blob, strict=True)
        algorithm = info["algorithm"]
        params = algorithm["parameters"]
        return algorithm["algorithm"].dotted, (None if params.native is None else params.dump()), \
            info["private_key"].native
    except (ValueError, TypeError, KeyError):
        raise CKRError(C.CKR_WRAPPED_KEY_INVALID, f"not a PKCS#8 {what} private key") from None


def _check_class(cls, what):
    if cls != C.CKO_PRIVATE_KEY:
        raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, f"{what} keys unwrap as private keys")


def load(cls, blob, key_classes, what):
    """The private key inside `blob`, which must be one of `key_classes`, else the spec's CKR."""
    _check_class(cls, what)
    oid, _, _ = _info(blob, what)
    if oid in FINITE_FIELD_DH:
        raise CKRError(C.CKR_WRAPPED_KEY_INVALID, f"not a {what} key")
    try:
        private = serialization.load_der_private_key(blob, None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CKRError(C.CKR_WRAPPED_KEY_INVALID, f"not a PKCS#8 {what} private key") from None
    if not isinstance(private, key_classes):
        raise CKRError(C.CKR_WRAPPED_KEY_INVALID, f"not a {what} key")
    return private


def dh_numbers(cls, blob):
    """A finite-field DH private key, PKCS #3 or X9.42 -> (p, g, x). The caller validates them."""
    _check_class(cls, "DH")
    oid, params, private = _info(blob, "DH")
    if oid not in FINITE_FIELD_DH or params is None:
        raise CKRError(C.CKR_WRAPPED_KEY_INVALID, "not a DH key")
    der = asn1()
    spec = der.algos.DHParameters if oid == PKCS3_DH else der.keys.DomainParameters
    try:
        domain = spec.load(params, strict=True)
        p, g = domain["p"].native, domain["g"].native
        x = der.core.Integer.load(private, strict=True).native
    except (ValueError, TypeError, KeyError):
        raise CKRError(C.CKR_WRAPPED_KEY_INVALID, "malformed PKCS#8 DH private key") from None
    return p, g, x
