"""What all secret-key types share: CKA_VALUE / CKA_VALUE_LEN, key generation
from CKA_VALUE_LEN, raw export for wrapping, and the check value."""

import os

from ... import constants as C
from ...errors import CKRError
from . import KeyType


def secret_key_type(ckk, lengths, check_value=None):
    """A KeyType for secret keys whose CKA_VALUE length is in `lengths` (bytes).

    check_value(value) -> 3 bytes, the KCV the spec defines for the type.
    """

    def complete(cls, attrs):
        value = attrs[C.CKA_VALUE]
        if len(value) not in lengths:
            raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, f"key of {len(value)} bytes for this key type")
        given_len = attrs.get(C.CKA_VALUE_LEN)
        if given_len is not None and given_len != len(value):
            raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, "CKA_VALUE_LEN does not match CKA_VALUE")
        attrs[C.CKA_VALUE_LEN] = len(value)
        if check_value is not None:
            computed = check_value(value)
            given = attrs.get(C.CKA_CHECK_VALUE)
            if given and given != computed:
                raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, "CKA_CHECK_VALUE does not match the key")
            attrs[C.CKA_CHECK_VALUE] = computed

    def load(cls, blob):
        if cls != C.CKO_SECRET_KEY:
            raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, "a secret key type needs CKO_SECRET_KEY")
        if len(blob) not in lengths:
            raise CKRError(C.CKR_WRAPPED_KEY_INVALID, f"unwrapped {len(blob)} bytes for this key type")
        return {C.CKA_VALUE: blob}

    return KeyType(
        ckk=ckk,
        attrs={C.CKO_SECRET_KEY: frozenset({C.CKA_VALUE, C.CKA_VALUE_LEN})},
        required={C.CKO_SECRET_KEY: (C.CKA_VALUE,)},
        complete=complete,
        size=lambda attrs: len(attrs[C.CKA_VALUE]),
        export=lambda cls, attrs: attrs[C.CKA_VALUE],
        load=load,
    )


def generate_value(template, lengths, fixed_length=None):
    """Random CKA_VALUE for C_GenerateKey; CKA_VALUE_LEN from the template unless fixed."""
    length = fixed_length if fixed_length is not None else template.get(C.CKA_VALUE_LEN)
    if length is None:
        raise CKRError(C.CKR_TEMPLATE_INCOMPLETE, "CKA_VALUE_LEN missing")
    if fixed_length is not None and template.get(C.CKA_VALUE_LEN, length) != length:
        raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, "CKA_VALUE_LEN does not fit the key type")
    if length not in lengths:
        raise CKRError(C.CKR_KEY_SIZE_RANGE, f"{length} bytes for this key type")
    return {C.CKA_VALUE: os.urandom(length)}


class SecretKeyGen:
    """C_GenerateKey for a secret key type; row.info: ckk, lengths, fixed_length."""

    def generate(self, row, param, template):
        info = row.info
        material = generate_value(template, info["lengths"], info.get("fixed_length"))
        return C.CKO_SECRET_KEY, info["ckk"], material
