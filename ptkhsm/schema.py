"""The attribute schema: every CKA we know, its value kind and its policy flags.

One table drives decoding at the ABI, encoding in the store and the attribute
policy of the HSM. The flag names follow the footnotes of the PKCS#11 attribute
tables so a rule can be checked against the spec.

Values in Python: BOOL -> bool, ULONG -> int, BYTES/UTF8/BIGINT -> bytes,
DATE -> bytes (8 ASCII digits or empty), TEMPLATE -> tuple of (type, value),
MECHS -> tuple of int.
"""

import struct

from . import constants as C
from .errors import CKRError

BOOL, ULONG, BYTES, UTF8, DATE, BIGINT, TEMPLATE, MECHS = range(8)

# Policy flags.
SENSITIVE = 1 << 0   # hidden when CKA_SENSITIVE is TRUE or CKA_EXTRACTABLE is FALSE
READ_ONLY = 1 << 1   # set by the token only (spec footnote 4): never in a template
MUTABLE = 1 << 2     # may be changed by C_SetAttributeValue (footnote 8 absent)
COPY_SET = 1 << 3    # may be changed by C_CopyObject although not MUTABLE
TRUE_ONLY = 1 << 4   # once TRUE cannot become FALSE (footnote 11)
FALSE_ONLY = 1 << 5  # once FALSE cannot become TRUE (footnote 9)
SO_ONLY = 1 << 6     # only the SO may set it TRUE (CKA_TRUSTED, footnote 10)
MATERIAL = 1 << 7    # key material: computed by generation, never in its template

ULONG_SIZE = 8
_ULONG = struct.Struct("<Q")

SCHEMA = {
    C.CKA_CLASS: (ULONG, 0),
    C.CKA_TOKEN: (BOOL, COPY_SET),
    C.CKA_PRIVATE: (BOOL, COPY_SET),
    C.CKA_MODIFIABLE: (BOOL, COPY_SET),
    C.CKA_COPYABLE: (BOOL, FALSE_ONLY | MUTABLE),
    C.CKA_DESTROYABLE: (BOOL, COPY_SET),
    C.CKA_LABEL: (UTF8, MUTABLE),
    C.CKA_UNIQUE_ID: (UTF8, READ_ONLY),
    C.CKA_APPLICATION: (UTF8, MUTABLE),
    C.CKA_OBJECT_ID: (BYTES, MUTABLE),
    C.CKA_VALUE: (BYTES, SENSITIVE | MATERIAL),
    C.CKA_CERTIFICATE_TYPE: (ULONG, 0),
    C.CKA_ISSUER: (BYTES, MUTABLE),
    C.CKA_SERIAL_NUMBER: (BYTES, MUTABLE),
    C.CKA_TRUSTED: (BOOL, SO_ONLY | MUTABLE),
    C.CKA_CERTIFICATE_CATEGORY: (ULONG, 0),
    C.CKA_JAVA_MIDP_SECURITY_DOMAIN: (ULONG, 0),
    C.CKA_URL: (UTF8, 0),
    C.CKA_HASH_OF_SUBJECT_PUBLIC_KEY: (BYTES, 0),
    C.CKA_HASH_OF_ISSUER_PUBLIC_KEY: (BYTES, 0),
    C.CKA_NAME_HASH_ALGORITHM: (ULONG, 0),
    C.CKA_CHECK_VALUE: (BYTES, 0),
    C.CKA_KEY_TYPE: (ULONG, 0),
    C.CKA_SUBJECT: (BYTES, MUTABLE),
    C.CKA_ID: (BYTES, MUTABLE),
    C.CKA_SENSITIVE: (BOOL, TRUE_ONLY | MUTABLE),
    C.CKA_ENCRYPT: (BOOL, MUTABLE),
    C.CKA_DECRYPT: (BOOL, MUTABLE),
    C.CKA_WRAP: (BOOL, MUTABLE),
    C.CKA_UNWRAP: (BOOL, MUTABLE),
    C.CKA_SIGN: (BOOL, MUTABLE),
    C.CKA_SIGN_RECOVER: (BOOL, MUTABLE),
    C.CKA_VERIFY: (BOOL, MUTABLE),
    C.CKA_VERIFY_RECOVER: (BOOL, MUTABLE),
    C.CKA_DERIVE: (BOOL, MUTABLE),
    C.CKA_START_DATE: (DATE, MUTABLE),
    C.CKA_END_DATE: (DATE, MUTABLE),
    C.CKA_MODULUS: (BIGINT, MATERIAL),
    C.CKA_MODULUS_BITS: (ULONG, 0),
    C.CKA_PUBLIC_EXPONENT: (BIGINT, 0),
    C.CKA_PRIVATE_EXPONENT: (BIGINT, SENSITIVE | MATERIAL),
    C.CKA_PRIME_1: (BIGINT, SENSITIVE | MATERIAL),
    C.CKA_PRIME_2: (BIGINT, SENSITIVE | MATERIAL),
    C.CKA_EXPONENT_1: (BIGINT, SENSITIVE | MATERIAL),
    C.CKA_EXPONENT_2: (BIGINT, SENSITIVE | MATERIAL),
    C.CKA_COEFFICIENT: (BIGINT, SENSITIVE | MATERIAL),
    C.CKA_PUBLIC_KEY_INFO: (BYTES, 0),
    C.CKA_PRIME: (BIGINT, 0),
    C.CKA_SUBPRIME: (BIGINT, 0),
    C.CKA_BASE: (BIGINT, 0),
    C.CKA_PRIME_BITS: (ULONG, 0),
    C.CKA_VALUE_BITS: (ULONG, 0),
    C.CKA_VALUE_LEN: (ULONG, 0),
    C.CKA_EXTRACTABLE: (BOOL, FALSE_ONLY | MUTABLE),
    C.CKA_LOCAL: (BOOL, READ_ONLY),
    C.CKA_NEVER_EXTRACTABLE: (BOOL, READ_ONLY),
    C.CKA_ALWAYS_SENSITIVE: (BOOL, READ_ONLY),
    C.CKA_KEY_GEN_MECHANISM: (ULONG, READ_ONLY),
    C.CKA_EC_PARAMS: (BYTES, 0),
    C.CKA_EC_POINT: (BYTES, MATERIAL),
    C.CKA_ALWAYS_AUTHENTICATE: (BOOL, 0),
    C.CKA_WRAP_WITH_TRUSTED: (BOOL, TRUE_ONLY | MUTABLE),
    C.CKA_WRAP_TEMPLATE: (TEMPLATE, 0),
    C.CKA_UNWRAP_TEMPLATE: (TEMPLATE, 0),
    C.CKA_DERIVE_TEMPLATE: (TEMPLATE, 0),
    C.CKA_ALLOWED_MECHANISMS: (MECHS, 0),
    C.CKA_HW_FEATURE_TYPE: (ULONG, 0),
    C.CKA_MECHANISM_TYPE: (ULONG, 0),
    C.CKA_PROFILE_ID: (ULONG, 0),
    # PTK-C vendor attributes (docs/exttoken.md, "Vendor attributes").
    C.CKA_EXPORT: (BOOL, MUTABLE),
    C.CKA_EXPORTABLE: (BOOL, FALSE_ONLY | MUTABLE),
    C.CKA_DELETABLE: (BOOL, COPY_SET),
    C.CKA_IMPORT: (BOOL, MUTABLE),
    C.CKA_KEY_SIZE: (ULONG, READ_ONLY),
    C.CKA_USAGE_COUNT: (ULONG, READ_ONLY),
    C.CKA_SECURITY_MODE: (ULONG, READ_ONLY),  # the adapter object (hsm/adapter.py)
    C.CKA_FW_VERSION: (BYTES, READ_ONLY),
}


# The two questions asked of every attribute on the hot paths (C_GetAttributeValue,
# templates in and out, the CKM_WRAPKEY codec), one set lookup each.
SENSITIVE_TYPES = frozenset(t for t, (_, flags) in SCHEMA.items() if flags & SENSITIVE)
TEMPLATE_TYPES = frozenset(t for t, (kind, _) in SCHEMA.items() if kind == TEMPLATE)


def kind_of(attr_type):
    """The value kind; attributes we do not know are opaque bytes, by decision."""
    entry = SCHEMA.get(attr_type)
    return entry[0] if entry else BYTES


def flags_of(attr_type):
    entry = SCHEMA.get(attr_type)
    return entry[1] if entry else 0


def decode(attr_type, raw):
    """Bytes as the C caller laid them out -> Python value. TEMPLATE comes decoded already."""
    kind = kind_of(attr_type)
    if kind == BOOL:
        if len(raw) != 1:
            raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, f"{name(attr_type)}: CK_BBOOL of {len(raw)} bytes")
        return raw[0] != 0
    if kind == ULONG:
        if len(raw) != ULONG_SIZE:
            raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, f"{name(attr_type)}: CK_ULONG of {len(raw)} bytes")
        return _ULONG.unpack(raw)[0]
    if kind == DATE:
        if raw and (len(raw) != 8 or not raw.isdigit()):
            raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, f"{name(attr_type)}: not a CK_DATE")
        return bytes(raw)
    if kind == MECHS:
        if len(raw) % ULONG_SIZE:
            raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, f"{name(attr_type)}: not a CK_MECHANISM_TYPE array")
        return tuple(v for (v,) in struct.iter_unpack("<Q", raw))
    if kind == BIGINT:
        return bytes(raw).lstrip(b"\0") or b"\0"
    return bytes(raw)


def encode(attr_type, value):
    """Python value -> bytes in the C layout (the store uses the same layout)."""
    if type(value) is bytes:   # BYTES, UTF8, BIGINT and DATE values are their own layout
        return value
    kind = kind_of(attr_type)
    if kind == BOOL:
        return b"\1" if value else b"\0"
    if kind == ULONG:
        return _ULONG.pack(value)
    if kind == MECHS:
        return b"".join(_ULONG.pack(v) for v in value)
    if kind == TEMPLATE:
        return encode_template(value)
    return value


def encode_template(template):
    """A template as bytes: count, then (type, length, value) each; for the store only."""
    parts = [_ULONG.pack(len(template))]
    for attr_type, value in template:
        raw = encode(attr_type, value)
        parts.append(_ULONG.pack(attr_type) + _ULONG.pack(len(raw)) + raw)
    return b"".join(parts)


def decode_template(raw):
    """encode_template's bytes -> ((type, value), ...); ValueError if they are malformed."""
    try:
        return _decode_template(memoryview(raw))
    except (struct.error, OverflowError, CKRError) as exc:
        raise ValueError(f"malformed attribute template: {exc}") from None


def _decode_template(view):
    (count,) = _ULONG.unpack_from(view, 0)
    pos, out = 8, []
    for _ in range(count):
        attr_type, length = struct.unpack_from("<QQ", view, pos)
        pos += 16
        if pos + length > len(view):
            raise ValueError("attribute value runs past the end")
        chunk = view[pos:pos + length]
        pos += length
        value = _decode_template(chunk) if attr_type in TEMPLATE_TYPES else decode(attr_type, bytes(chunk))
        out.append((attr_type, value))
    if pos != len(view):
        raise ValueError("bytes after the last attribute")
    return tuple(out)


def name(attr_type):
    try:
        return C.CKA(attr_type).name
    except ValueError:
        return hex(attr_type)

