"""The preamble every cryptographic operation shares, written once.

Looks the mechanism up, checks that it supports the function, that the key
has the right type, size, usage attribute and CKA_ALLOWED_MECHANISMS, then
asks the family implementation for the operation.
"""

from .. import constants as C
from .. import mechparams, schema
from ..errors import CKRError
from . import policy
from .mechanisms import key_type, lookup, name

FUNCTION = {
    "encrypt": (C.CKF_ENCRYPT, C.CKA_ENCRYPT),
    "decrypt": (C.CKF_DECRYPT, C.CKA_DECRYPT),
    "sign": (C.CKF_SIGN, C.CKA_SIGN),
    "verify": (C.CKF_VERIFY, C.CKA_VERIFY),
    "digest": (C.CKF_DIGEST, None),
    "generate": (C.CKF_GENERATE, None),
    "generate_pair": (C.CKF_GENERATE_KEY_PAIR, None),
    "wrap": (C.CKF_WRAP, C.CKA_WRAP),
    "unwrap": (C.CKF_UNWRAP, C.CKA_UNWRAP),
    "derive": (C.CKF_DERIVE, C.CKA_DERIVE),
}

# C_WrapKey and C_UnwrapKey name the key they reject (PKCS#11 v2.40 §5.14).
KEY_ERRORS = {
    "wrap": (C.CKR_WRAPPING_KEY_TYPE_INCONSISTENT, C.CKR_WRAPPING_KEY_SIZE_RANGE),
    "unwrap": (C.CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT, C.CKR_UNWRAPPING_KEY_SIZE_RANGE),
}
_KEY_ERRORS = (C.CKR_KEY_TYPE_INCONSISTENT, C.CKR_KEY_SIZE_RANGE)


# (function, CKM, parameter given) -> row, for the combinations that passed _row_for's
# checks: the registry does not change once loaded, so neither do their answers.
_FIT = {}


def _row_for(kind, mechanism):
    fit = (kind, mechanism.type, mechanism.param is not None)
    row = _FIT.get(fit)
    if row is not None:
        return row
    row = lookup(mechanism.type)
    if mechanism.param is not None and mechparams.kind_of(row.ckm) == mechparams.NONE:
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, f"{name(row.ckm)} takes no parameter")
    flag, _ = FUNCTION[kind]
    if not row.flags & flag:
        raise CKRError(C.CKR_MECHANISM_INVALID, f"{name(row.ckm)} cannot {kind}")
    _FIT[fit] = row
    return row


# PTK-C's CKA_EXPORT / CKA_IMPORT: with CKA_WRAP / CKA_UNWRAP FALSE, a key may still wrap or
# unwrap whole objects (CKM_WRAPKEY_*), nothing else.
VENDOR_USAGE = {"wrap": C.CKA_EXPORT, "unwrap": C.CKA_IMPORT}


def check_key(kind, row, key):
    # A key passes or fails the same way until its attributes change, which drops key.cache.
    passed = ("checked", kind, row.ckm)
    if passed in key.cache:
        return
    _, usage = FUNCTION[kind]
    type_error, size_error = KEY_ERRORS.get(kind, _KEY_ERRORS)
    ckk = key.attrs.get(C.CKA_KEY_TYPE)
    if ckk not in row.key_types:
        raise CKRError(type_error, f"{name(row.ckm)} does not take this key type")
    if usage is not None and not key.attrs.get(usage):
        vendor = VENDOR_USAGE.get(kind)
        if vendor is None or not key.attrs.get(vendor):
            raise CKRError(C.CKR_KEY_FUNCTION_NOT_PERMITTED, f"key does not allow {kind}")
        if not row.info.get("object"):   # PTK-C: CKA_IMPORT/EXPORT alone allow CKM_WRAPKEY_* only
            raise CKRError(C.CKR_MECHANISM_INVALID, f"{schema.name(vendor)} allows only the CKM_WRAPKEY_* mechanisms")
    allowed = key.attrs.get(C.CKA_ALLOWED_MECHANISMS)
    if allowed and row.ckm not in allowed:
        raise CKRError(C.CKR_MECHANISM_INVALID, f"{name(row.ckm)} not in CKA_ALLOWED_MECHANISMS")
    if row.max_key:
        size = key_type(ckk).size(key.attrs)
        if not row.min_key <= size <= row.max_key:
            raise CKRError(size_error, f"key size {size} outside {row.min_key}..{row.max_key}")
    key.cache[passed] = True


def _resolve_param(row, mechanism, resolve):
    if row.ckm in mechparams.KEY_HANDLE_MECHANISMS:
        return resolve(mechanism.param)
    return mechanism.param


def start(kind, mechanism, key):
    """The operation object for C_EncryptInit, C_DecryptInit, C_DigestInit, C_SignInit, C_VerifyInit."""
    row = _row_for(kind, mechanism)
    if key is None:
        return getattr(row.impl, kind)(row, mechanism.param)
    check_key(kind, row, key)
    return getattr(row.impl, kind)(row, key, mechanism.param)


def generate(mechanism, template):
    """-> (class, key type, material attributes) for C_GenerateKey."""
    row = _row_for("generate", mechanism)
    return row.impl.generate(row, mechanism.param, template)


def generate_pair(mechanism, public_template, private_template):
    """-> (key type, public material, private material) for C_GenerateKeyPair."""
    row = _row_for("generate_pair", mechanism)
    return row.impl.generate_pair(row, mechanism.param, public_template, private_template)


def wrap(mechanism, wrapping_key, key):
    """-> the wrapped key. A row with info["object"] (the PTK-C CKM_WRAPKEY_* mechanisms)
    wraps a whole object, attributes included: it gets the attribute dict, takes any object
    class, and gives the attributes back on unwrap."""
    row = _row_for("wrap", mechanism)
    check_key("wrap", row, wrapping_key)
    attrs = key.attrs
    cls = attrs[C.CKA_CLASS]
    whole = row.info.get("object")
    if not whole and cls not in row.info.get("wraps", (C.CKO_SECRET_KEY, C.CKO_PRIVATE_KEY)):
        raise CKRError(C.CKR_KEY_NOT_WRAPPABLE, f"{name(row.ckm)} does not wrap this class of key")
    if cls in (C.CKO_SECRET_KEY, C.CKO_PRIVATE_KEY) and not attrs.get(C.CKA_EXTRACTABLE):
        raise CKRError(C.CKR_KEY_UNEXTRACTABLE, "key is not extractable")
    if attrs.get(C.CKA_EXPORTABLE) is False:   # PTK-C: the key never leaves the token (docs/exttoken.md)
        raise CKRError(C.CKR_KEY_UNEXTRACTABLE, "the key's CKA_EXPORTABLE is FALSE: it cannot be wrapped")
    if attrs.get(C.CKA_WRAP_WITH_TRUSTED) and not wrapping_key.attrs.get(C.CKA_TRUSTED):
        raise CKRError(C.CKR_KEY_NOT_WRAPPABLE, "key may only be wrapped with a trusted key")
    for attr_type, value in wrapping_key.attrs.get(C.CKA_WRAP_TEMPLATE, ()):
        if attrs.get(attr_type) != value:
            raise CKRError(C.CKR_KEY_NOT_WRAPPABLE, "key does not match CKA_WRAP_TEMPLATE")
    if whole:
        return row.impl.wrap(row, wrapping_key, mechanism.param, dict(attrs))
    blob = key_type(attrs[C.CKA_KEY_TYPE]).export(cls, attrs)
    return row.impl.wrap(row, wrapping_key, mechanism.param, blob)


def _apply_key_template(key, attr_type, template):
    """Merge the key's CKA_UNWRAP_TEMPLATE / CKA_DERIVE_TEMPLATE into the template of the
    key being made; the caller's template may repeat its values, not contradict them."""
    for inner_type, value in key.attrs.get(attr_type, ()):
        if template.setdefault(inner_type, value) != value:
            raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, f"template conflicts with {schema.name(attr_type)}")


def unwrap(mechanism, unwrapping_key, wrapped, template):
    """-> (origin, class, key type, material) for policy.new_object; template is updated in
    place with the unwrapping key's CKA_UNWRAP_TEMPLATE.

    origin UNWRAP: material is the key material, the template gives the rest.
    origin RESTORE (info["object"] rows): material is the whole object from the cryptogram,
    which the template then changes as C_CopyObject's template would."""
    row = _row_for("unwrap", mechanism)
    check_key("unwrap", row, unwrapping_key)
    _apply_key_template(unwrapping_key, C.CKA_UNWRAP_TEMPLATE, template)
    if row.info.get("object"):
        attrs = row.impl.unwrap(row, unwrapping_key, mechanism.param, wrapped)
        return policy.RESTORE, attrs.get(C.CKA_CLASS), attrs.get(C.CKA_KEY_TYPE), attrs
    cls, ckk = template.get(C.CKA_CLASS), template.get(C.CKA_KEY_TYPE)
    if cls is None or ckk is None:
        raise CKRError(C.CKR_TEMPLATE_INCOMPLETE, "unwrapping needs CKA_CLASS and CKA_KEY_TYPE")
    if cls not in row.info.get("wraps", (C.CKO_SECRET_KEY, C.CKO_PRIVATE_KEY)):
        raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, f"{name(row.ckm)} does not unwrap this class of key")
    blob = row.impl.unwrap(row, unwrapping_key, mechanism.param, wrapped)
    length = template.get(C.CKA_VALUE_LEN)
    if row.info.get("zero_pad") and cls == C.CKO_SECRET_KEY and length is not None:
        # The mechanism padded the value with zeros to its block (AES key wrap): cut it back.
        if length > len(blob) or blob[length:].strip(b"\0"):
            raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, "CKA_VALUE_LEN does not fit the wrapped key")
        blob = blob[:length]
    return policy.UNWRAP, cls, ckk, key_type(ckk).load(cls, blob)


def derive(mechanism, base, template, resolve):
    """-> (class, key type, material) for policy.new_object; template is updated in place
    with the base key's CKA_DERIVE_TEMPLATE."""
    row = _row_for("derive", mechanism)
    check_key("derive", row, base)
    _apply_key_template(base, C.CKA_DERIVE_TEMPLATE, template)
    param = _resolve_param(row, mechanism, resolve)
    return row.impl.derive(row, base, param, template)
