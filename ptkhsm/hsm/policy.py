"""The attribute policy of PKCS#11 v2.40/3.0 section 4: which attributes an
object may carry, which a template may give, defaults, and the rules of
C_CreateObject, C_CopyObject, C_SetAttributeValue and C_GetAttributeValue.

Flags per attribute come from `ptkhsm.schema`; key-type specifics come from
the key type handlers the mechanism families register.
"""

import functools
import secrets

from cryptography.hazmat.primitives import hashes

from .. import constants as C
from .. import schema
from ..errors import CKRError
from .mechanisms import KEY_TYPES, key_type

STORAGE = {C.CKA_CLASS, C.CKA_TOKEN, C.CKA_PRIVATE, C.CKA_MODIFIABLE, C.CKA_LABEL,
           C.CKA_COPYABLE, C.CKA_DESTROYABLE, C.CKA_UNIQUE_ID, C.CKA_DELETABLE}
KEY = STORAGE | {C.CKA_KEY_TYPE, C.CKA_ID, C.CKA_START_DATE, C.CKA_END_DATE, C.CKA_DERIVE,
                 C.CKA_LOCAL, C.CKA_KEY_GEN_MECHANISM, C.CKA_ALLOWED_MECHANISMS}
CLASS_ATTRS = {
    C.CKO_DATA: STORAGE | {C.CKA_APPLICATION, C.CKA_OBJECT_ID, C.CKA_VALUE},
    C.CKO_CERTIFICATE: STORAGE | {
        C.CKA_CERTIFICATE_TYPE, C.CKA_TRUSTED, C.CKA_CERTIFICATE_CATEGORY, C.CKA_CHECK_VALUE,
        C.CKA_START_DATE, C.CKA_END_DATE, C.CKA_PUBLIC_KEY_INFO, C.CKA_SUBJECT, C.CKA_ID,
        C.CKA_ISSUER, C.CKA_SERIAL_NUMBER, C.CKA_VALUE, C.CKA_URL,
        C.CKA_HASH_OF_SUBJECT_PUBLIC_KEY, C.CKA_HASH_OF_ISSUER_PUBLIC_KEY,
        C.CKA_JAVA_MIDP_SECURITY_DOMAIN, C.CKA_NAME_HASH_ALGORITHM},
    C.CKO_PUBLIC_KEY: KEY | {
        C.CKA_SUBJECT, C.CKA_ENCRYPT, C.CKA_VERIFY, C.CKA_VERIFY_RECOVER, C.CKA_WRAP,
        C.CKA_TRUSTED, C.CKA_WRAP_TEMPLATE, C.CKA_PUBLIC_KEY_INFO},
    C.CKO_PRIVATE_KEY: KEY | {
        C.CKA_SUBJECT, C.CKA_SENSITIVE, C.CKA_DECRYPT, C.CKA_SIGN, C.CKA_SIGN_RECOVER,
        C.CKA_UNWRAP, C.CKA_EXTRACTABLE, C.CKA_ALWAYS_SENSITIVE, C.CKA_NEVER_EXTRACTABLE,
        C.CKA_WRAP_WITH_TRUSTED, C.CKA_UNWRAP_TEMPLATE, C.CKA_DERIVE_TEMPLATE,
        C.CKA_ALWAYS_AUTHENTICATE, C.CKA_PUBLIC_KEY_INFO},
    C.CKO_SECRET_KEY: KEY | {
        C.CKA_SENSITIVE, C.CKA_ENCRYPT, C.CKA_DECRYPT, C.CKA_SIGN, C.CKA_VERIFY, C.CKA_WRAP,
        C.CKA_UNWRAP, C.CKA_EXTRACTABLE, C.CKA_ALWAYS_SENSITIVE, C.CKA_NEVER_EXTRACTABLE,
        C.CKA_CHECK_VALUE, C.CKA_WRAP_WITH_TRUSTED, C.CKA_TRUSTED, C.CKA_WRAP_TEMPLATE,
        C.CKA_UNWRAP_TEMPLATE, C.CKA_DERIVE_TEMPLATE},
    C.CKO_DOMAIN_PARAMETERS: STORAGE | {C.CKA_KEY_TYPE, C.CKA_LOCAL},
}
# PTK-C vendor attributes: who may wrap (EXPORT) and unwrap (IMPORT) the CKM_WRAPKEY_* way.
for _cls in (C.CKO_PUBLIC_KEY, C.CKO_PRIVATE_KEY, C.CKO_SECRET_KEY):   # set by PTK-C's token only
    CLASS_ATTRS[_cls] |= {C.CKA_KEY_SIZE, C.CKA_USAGE_COUNT}
CLASS_ATTRS[C.CKO_PUBLIC_KEY] |= {C.CKA_EXPORT}
CLASS_ATTRS[C.CKO_PRIVATE_KEY] |= {C.CKA_IMPORT, C.CKA_EXPORTABLE}
CLASS_ATTRS[C.CKO_SECRET_KEY] |= {C.CKA_EXPORT, C.CKA_IMPORT, C.CKA_EXPORTABLE}
KEY_CLASSES = (C.CKO_PUBLIC_KEY, C.CKO_PRIVATE_KEY, C.CKO_SECRET_KEY)
# Classes whose attributes depend on CKA_KEY_TYPE (the key type handler adds its own).
TYPED_CLASSES = KEY_CLASSES + (C.CKO_DOMAIN_PARAMETERS,)
SECRET_CLASSES = (C.CKO_PRIVATE_KEY, C.CKO_SECRET_KEY)

_COMMON_DEFAULTS = {C.CKA_TOKEN: False, C.CKA_MODIFIABLE: True, C.CKA_COPYABLE: True,
                    C.CKA_DESTROYABLE: True, C.CKA_LABEL: b""}
_KEY_DEFAULTS = {C.CKA_ID: b"", C.CKA_START_DATE: b"", C.CKA_END_DATE: b"", C.CKA_DERIVE: False,
                 C.CKA_ALLOWED_MECHANISMS: ()}
DEFAULTS = {
    C.CKO_DATA: {C.CKA_PRIVATE: False, C.CKA_APPLICATION: b"", C.CKA_OBJECT_ID: b"",
                 C.CKA_VALUE: b""},
    C.CKO_CERTIFICATE: {C.CKA_PRIVATE: False, C.CKA_TRUSTED: False,
                        C.CKA_CERTIFICATE_CATEGORY: 0, C.CKA_START_DATE: b"",
                        C.CKA_END_DATE: b"", C.CKA_ID: b"", C.CKA_ISSUER: b"",
                        C.CKA_SERIAL_NUMBER: b"", C.CKA_URL: b"",
                        C.CKA_HASH_OF_SUBJECT_PUBLIC_KEY: b"",
                        C.CKA_HASH_OF_ISSUER_PUBLIC_KEY: b"",
                        C.CKA_JAVA_MIDP_SECURITY_DOMAIN: 0, C.CKA_NAME_HASH_ALGORITHM: C.CKM_SHA_1},
    C.CKO_PUBLIC_KEY: {**_KEY_DEFAULTS, C.CKA_PRIVATE: False, C.CKA_SUBJECT: b"",
                       C.CKA_ENCRYPT: True, C.CKA_VERIFY: True, C.CKA_VERIFY_RECOVER: True,
                       C.CKA_WRAP: True, C.CKA_TRUSTED: False},
    C.CKO_PRIVATE_KEY: {**_KEY_DEFAULTS, C.CKA_PRIVATE: True, C.CKA_SUBJECT: b"",
                        C.CKA_SENSITIVE: True, C.CKA_DECRYPT: True, C.CKA_SIGN: True,
                        C.CKA_SIGN_RECOVER: True, C.CKA_UNWRAP: True, C.CKA_EXTRACTABLE: False,
                        C.CKA_WRAP_WITH_TRUSTED: False, C.CKA_ALWAYS_AUTHENTICATE: False},
    C.CKO_SECRET_KEY: {**_KEY_DEFAULTS, C.CKA_PRIVATE: True, C.CKA_SENSITIVE: True,
                       C.CKA_ENCRYPT: True, C.CKA_DECRYPT: True, C.CKA_SIGN: True,
                       C.CKA_VERIFY: True, C.CKA_WRAP: True, C.CKA_UNWRAP: True,
                       C.CKA_EXTRACTABLE: False, C.CKA_WRAP_WITH_TRUSTED: False,
                       C.CKA_TRUSTED: False},
    C.CKO_DOMAIN_PARAMETERS: {C.CKA_PRIVATE: False},
}

# What C_CreateObject must be given, beyond what the key type requires.
REQUIRED = {C.CKO_CERTIFICATE: (C.CKA_CERTIFICATE_TYPE, C.CKA_SUBJECT, C.CKA_VALUE),
            C.CKO_PUBLIC_KEY: (C.CKA_KEY_TYPE,), C.CKO_PRIVATE_KEY: (C.CKA_KEY_TYPE,),
            C.CKO_SECRET_KEY: (C.CKA_KEY_TYPE,), C.CKO_DOMAIN_PARAMETERS: (C.CKA_KEY_TYPE,)}

CREATE, GENERATE, UNWRAP, DERIVE = "create", "generate", "unwrap", "derive"
# An object given back whole, attributes included, by a vendor wrapping mechanism
# (CKM_WRAPKEY_DES3_CBC): its attributes are restored, not made anew.
RESTORE = "restore"
# Never restored: a new object gets its own identity.
_NOT_RESTORED = (C.CKA_UNIQUE_ID,)
# What a restored object lacking an attribute gets: the defaults of a new object, and the
# history of an unwrapped one (this module's cryptograms carry every attribute; one made
# elsewhere from docs/wrapkey-des3-cbc.md may not).
_RESTORE_DEFAULTS = {cls: {**_COMMON_DEFAULTS, **defaults} for cls, defaults in DEFAULTS.items()}
for _cls in TYPED_CLASSES:
    _RESTORE_DEFAULTS[_cls][C.CKA_LOCAL] = False
for _cls in KEY_CLASSES:
    _RESTORE_DEFAULTS[_cls][C.CKA_KEY_GEN_MECHANISM] = C.CK_UNAVAILABLE_INFORMATION
for _cls in SECRET_CLASSES:
    _RESTORE_DEFAULTS[_cls].update({C.CKA_ALWAYS_SENSITIVE: False, C.CKA_NEVER_EXTRACTABLE: False})


def with_identity(attrs):
    """A new object (created, generated, derived, unwrapped, restored or copied) given its
    CKA_UNIQUE_ID (v3.0 §4.4: set by the token when the object is made, read-only,
    unique among its objects, never reused): 128 random bits as 32 hex digits. In place:
    attrs is the new object's own dict (a copy of 30-odd entries per new object otherwise)."""
    attrs[C.CKA_UNIQUE_ID] = secrets.token_hex(16).encode()
    return attrs


def as_dict(template):
    """A template list -> dict; the same type twice with different values is inconsistent."""
    out = {}
    for attr_type, value in template:
        if attr_type in out and out[attr_type] != value:
            raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, f"{schema.name(attr_type)} given twice")
        out[attr_type] = value
    return out


@functools.cache   # asked for every new object; the tables are complete once the modules are imported
def allowed(cls, ckk=None):
    attrs = CLASS_ATTRS[cls]
    if ckk is not None:
        attrs = attrs | key_type(ckk).attrs.get(cls, frozenset())
    return frozenset(attrs)


def new_object(template, origin, cls=None, ckk=None, mechanism=None, base=None, extra=None):
    """Build the attributes of a new object.

    template: dict from the caller. cls/ckk: what the operation implies (a
    template saying otherwise is inconsistent). extra: attributes the
    operation computed (key material). base: the base key for DERIVE.
    RESTORE: extra is the whole object; the template changes it as C_CopyObject's would.
    """
    if origin == RESTORE:
        return _restore(template, extra)
    cls = _implied(template, C.CKA_CLASS, cls, "object class")
    if cls not in CLASS_ATTRS:
        raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, f"object class {cls:#x} not supported")
    if cls in TYPED_CLASSES:
        ckk = _implied(template, C.CKA_KEY_TYPE, ckk, "key type")
        if cls not in key_type(ckk).attrs:
            raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, f"key type {ckk:#x} has no object of class {cls:#x}")
    elif cls == C.CKO_CERTIFICATE and template.get(C.CKA_CERTIFICATE_TYPE, C.CKC_X_509) != C.CKC_X_509:
        raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, "only X.509 certificates are supported")
    permitted = allowed(cls, ckk if cls in TYPED_CLASSES else None)
    for attr_type, value in template.items():
        flags = schema.flags_of(attr_type)
        if attr_type not in permitted:
            raise CKRError(C.CKR_ATTRIBUTE_TYPE_INVALID,
                           f"{schema.name(attr_type)} does not apply to this object")
        if flags & schema.READ_ONLY:
            raise CKRError(C.CKR_ATTRIBUTE_READ_ONLY, f"{schema.name(attr_type)} is set by the token")
        if origin != CREATE and flags & schema.MATERIAL and cls in KEY_CLASSES:
            raise CKRError(C.CKR_TEMPLATE_INCONSISTENT,
                           f"{schema.name(attr_type)} is computed by the operation")
    if origin == CREATE:
        missing = _missing(template, cls, ckk)
        if missing:
            raise CKRError(C.CKR_TEMPLATE_INCOMPLETE, f"missing {missing}")
    attrs = {C.CKA_CLASS: cls, **_COMMON_DEFAULTS, **DEFAULTS[cls], **template, **(extra or {})}
    if cls in TYPED_CLASSES:
        attrs[C.CKA_KEY_TYPE] = ckk
        attrs[C.CKA_LOCAL] = origin == GENERATE
        if cls in KEY_CLASSES:
            attrs[C.CKA_KEY_GEN_MECHANISM] = mechanism if origin == GENERATE else C.CK_UNAVAILABLE_INFORMATION
        if cls in SECRET_CLASSES:
            _set_history(attrs, origin, base)
        key_type(ckk).complete(cls, attrs)
    elif cls == C.CKO_CERTIFICATE:
        _certificate_check_value(attrs)
    return attrs


@functools.cache
def _required(cls, ckk):
    return REQUIRED.get(cls, ()) + (key_type(ckk).required.get(cls, ()) if ckk is not None else ())


def _missing(attrs, cls, ckk):
    """The attributes C_CreateObject must be given that attrs lacks, named ('' for none)."""
    return ", ".join(schema.name(t) for t in _required(cls, ckk) if t not in attrs)


def _restore(template, restored):
    """The object of a CKM_WRAPKEY_* cryptogram, with the template's changes. Authenticated
    only means made by a holder of the unwrapping key, so it is checked as an outsider's:
    against the schema, for what a new object needs, and for a claim no cryptogram of this
    module makes. restored is the mechanism's own new dict: it becomes the object's."""
    attrs = restored
    for attr_type in _NOT_RESTORED:
        attrs.pop(attr_type, None)
    cls, ckk = attrs.get(C.CKA_CLASS), attrs.get(C.CKA_KEY_TYPE)
    if cls not in CLASS_ATTRS or (cls in TYPED_CLASSES and ckk not in KEY_TYPES):
        raise CKRError(C.CKR_WRAPPED_KEY_INVALID, "wrapped object of an unsupported class or key type")
    permitted = allowed(cls, ckk if cls in TYPED_CLASSES else None)
    if not attrs.keys() <= permitted:
        stray = [schema.name(t) for t in attrs if t not in permitted]
        raise CKRError(C.CKR_WRAPPED_KEY_INVALID, f"wrapped object carries {', '.join(stray)}")
    missing = _missing(attrs, cls, ckk)
    if missing:
        raise CKRError(C.CKR_WRAPPED_KEY_INVALID, f"wrapped object lacks {missing}")
    defaults = _RESTORE_DEFAULTS[cls]
    if not defaults.keys() <= attrs.keys():
        for attr_type in defaults.keys() - attrs.keys():
            attrs[attr_type] = defaults[attr_type]
    # C_WrapKey takes only extractable keys, so no cryptogram of this module says "never
    # extractable": one that does was made outside, by someone who knows the unwrapping key,
    # to have a key whose value they know claim it never left an HSM.
    if cls in SECRET_CLASSES and attrs.get(C.CKA_NEVER_EXTRACTABLE):
        raise CKRError(C.CKR_WRAPPED_KEY_INVALID, "wrapped key claims CKA_NEVER_EXTRACTABLE")
    # check_so_only runs where every new object is added (the HSM knows who is logged in).
    check_change(attrs, template, is_so=True, copying=True)
    attrs.update(template)
    if cls in TYPED_CLASSES:
        try:
            key_type(ckk).complete(cls, attrs)
        except CKRError as exc:  # the template cannot touch the material: the cryptogram is wrong
            raise CKRError(C.CKR_WRAPPED_KEY_INVALID, f"wrapped object: {exc}") from None
    return attrs


def _implied(template, attr_type, implied, what):
    given = template.get(attr_type)
    if implied is not None and given is not None and given != implied:
        raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, f"{what} does not match the mechanism")
    value = given if given is not None else implied
    if value is None:
        raise CKRError(C.CKR_TEMPLATE_INCOMPLETE, f"{schema.name(attr_type)} missing")
    return value


def _set_history(attrs, origin, base):
    if origin == GENERATE:
        attrs[C.CKA_ALWAYS_SENSITIVE] = attrs[C.CKA_SENSITIVE]
        attrs[C.CKA_NEVER_EXTRACTABLE] = not attrs[C.CKA_EXTRACTABLE]
    elif origin == DERIVE and base is not None:
        # A mechanism that mixes in a second key (CONCATENATE_BASE_AND_KEY) may lower
        # these through `extra`; a template cannot carry them (READ_ONLY).
        attrs[C.CKA_ALWAYS_SENSITIVE] = (attrs.get(C.CKA_ALWAYS_SENSITIVE, True)
                                         and base.attrs[C.CKA_ALWAYS_SENSITIVE] and attrs[C.CKA_SENSITIVE])
        attrs[C.CKA_NEVER_EXTRACTABLE] = (attrs.get(C.CKA_NEVER_EXTRACTABLE, True)
                                          and base.attrs[C.CKA_NEVER_EXTRACTABLE]
                                          and not attrs[C.CKA_EXTRACTABLE])
    else:
        attrs[C.CKA_ALWAYS_SENSITIVE] = False
        attrs[C.CKA_NEVER_EXTRACTABLE] = False


def _certificate_check_value(attrs):
    digest = hashes.Hash(hashes.SHA1())
    digest.update(attrs[C.CKA_VALUE])
    computed = digest.finalize()[:3]
    given = attrs.get(C.CKA_CHECK_VALUE)
    if given and given != computed:
        raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, "CKA_CHECK_VALUE does not match the certificate")
    attrs[C.CKA_CHECK_VALUE] = computed


def check_change(attrs, changes, is_so, copying=False):
    """Validate C_SetAttributeValue (or the template of C_CopyObject) against an object."""
    cls = attrs[C.CKA_CLASS]
    if not copying and not attrs.get(C.CKA_MODIFIABLE, True):
        raise CKRError(C.CKR_ACTION_PROHIBITED, "object is not modifiable")
    permitted = allowed(cls, attrs.get(C.CKA_KEY_TYPE))
    for attr_type, value in changes.items():
        if attr_type not in permitted:
            raise CKRError(C.CKR_ATTRIBUTE_TYPE_INVALID, f"{schema.name(attr_type)} does not apply")
        if attrs.get(attr_type) == value:
            continue
        flags = schema.flags_of(attr_type)    # only for a change (ExtToken's loads change nothing)
        changeable = flags & schema.MUTABLE or (copying and flags & schema.COPY_SET) or (
            cls == C.CKO_DATA and attr_type == C.CKA_VALUE)
        if not changeable:
            raise CKRError(C.CKR_ATTRIBUTE_READ_ONLY, f"{schema.name(attr_type)} cannot be changed")
        if flags & schema.TRUE_ONLY and attrs.get(attr_type) and not value:
            raise CKRError(C.CKR_ATTRIBUTE_READ_ONLY, f"{schema.name(attr_type)} cannot become FALSE")
        if flags & schema.FALSE_ONLY and not attrs.get(attr_type, True) and value:
            raise CKRError(C.CKR_ATTRIBUTE_READ_ONLY, f"{schema.name(attr_type)} cannot become TRUE")
        check_so_only({attr_type: value}, is_so)
        if attr_type == C.CKA_MODIFIABLE and value and not attrs.get(C.CKA_MODIFIABLE, True):
            raise CKRError(C.CKR_ATTRIBUTE_READ_ONLY, "CKA_MODIFIABLE cannot become TRUE")


_SO_ONLY = tuple(t for t, (_, flags) in schema.SCHEMA.items() if flags & schema.SO_ONLY)


def check_so_only(values, is_so):
    """Attributes only the SO may set TRUE (schema.SO_ONLY: CKA_TRUSTED), on a new object or a
    change: the one place of that rule."""
    if is_so:
        return
    for attr_type in _SO_ONLY:    # a few types, not every attribute of the object
        if values.get(attr_type):
            raise CKRError(C.CKR_ATTRIBUTE_READ_ONLY, f"only the SO sets {schema.name(attr_type)}")


def hides_secrets(attrs):
    """True if the object's sensitive attributes (schema.SENSITIVE: key material) must not
    leave the token: a private or secret key that is sensitive or unextractable."""
    return attrs[C.CKA_CLASS] in SECRET_CLASSES and bool(
        attrs.get(C.CKA_SENSITIVE) or not attrs.get(C.CKA_EXTRACTABLE))


def visible_values(attrs, types):
    """C_GetAttributeValue's answer for each type: its value, or the CKRError of that
    attribute (not raised: the others are still given)."""
    hides = None   # asked once, and only if a sensitive type is asked for
    out = []
    for attr_type in types:
        value = attrs.get(attr_type, _ABSENT)
        if value is _ABSENT:
            value = CKRError(C.CKR_ATTRIBUTE_TYPE_INVALID, schema.name(attr_type))
        elif attr_type in schema.SENSITIVE_TYPES:
            if hides is None:
                hides = hides_secrets(attrs)
            if hides:
                value = CKRError(C.CKR_ATTRIBUTE_SENSITIVE, schema.name(attr_type))
        out.append(value)
    return out


_ABSENT = object()
