"""Private keys as C_WrapKey carries them: PKCS#8 DER, one path for every asymmetric family."""

import warnings

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.utils import CryptographyDeprecationWarning

from ... import constants as C
from ...errors import CKRError


def export(private):
    return private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


def load(cls, blob, key_classes, what):
    """The private key inside `blob`, which must be one of `key_classes`, else the spec's CKR."""
    if cls != C.CKO_PRIVATE_KEY:
        raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, f"{what} keys unwrap as private keys")
    try:
        with warnings.catch_warnings():  # finite-field DH keys are deprecated in cryptography 50
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            private = serialization.load_der_private_key(blob, None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CKRError(C.CKR_WRAPPED_KEY_INVALID, f"not a PKCS#8 {what} private key") from None
    if not isinstance(private, key_classes):
        raise CKRError(C.CKR_WRAPPED_KEY_INVALID, f"not a {what} key")
    return private
