"""The secret key a derivation makes: one rule for every derivation mechanism (the
simple derivations of derive.py, CKM_ECDH1_DERIVE, CKM_DH_PKCS_DERIVE).

- key type: the template's CKA_KEY_TYPE (after the base key's CKA_DERIVE_TEMPLATE);
  without it a generic secret, or CKR_TEMPLATE_INCOMPLETE where the mechanism
  needs one (ECDH, DH). A key type without secret keys: CKR_TEMPLATE_INCONSISTENT.
- length: CKA_VALUE_LEN; else the type's fixed length (DES 8, DES2 16, DES3 24);
  else, for a generic secret, the whole output; else CKR_TEMPLATE_INCOMPLETE. A
  mechanism that makes as many bytes as asked (an X9.63 KDF) has no whole output:
  it must be told.
- a CKA_VALUE_LEN that contradicts the fixed length, or asks for more than the
  mechanism gives (MAX_DERIVED for a KDF): CKR_TEMPLATE_INCONSISTENT (the
  encrypt-data mechanisms say CKR_MECHANISM_PARAM_INVALID: their data is too
  short); 0: CKR_ATTRIBUTE_VALUE_INVALID.
- DES keys get odd parity (PKCS#11: every DES key a token makes).
"""

from ... import constants as C
from ...errors import CKRError
from . import key_type
from .des import LENGTH as FIXED_LENGTH
from .des import fix_parity

MAX_DERIVED = 1024  # bytes; the largest generic secret the token keeps


def type_and_length(template, available=None, needs_type=False, too_short=C.CKR_TEMPLATE_INCONSISTENT):
    """-> (key type, length in bytes) of the derived key. `available`: how many bytes the
    mechanism produced (None: it makes as many as asked)."""
    ckk = template.get(C.CKA_KEY_TYPE)
    if ckk is None:
        if needs_type:
            raise CKRError(C.CKR_TEMPLATE_INCOMPLETE, "CKA_KEY_TYPE missing")
        ckk = C.CKK_GENERIC_SECRET
    if C.CKO_SECRET_KEY not in key_type(ckk).attrs:
        raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, "derivation makes secret keys")
    fixed = FIXED_LENGTH.get(ckk)
    length = template.get(C.CKA_VALUE_LEN, fixed)
    if length is None:
        if ckk != C.CKK_GENERIC_SECRET or available is None:
            raise CKRError(C.CKR_TEMPLATE_INCOMPLETE, "CKA_VALUE_LEN needed for this key type")
        length = available
    if fixed is not None and length != fixed:
        raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, "CKA_VALUE_LEN does not fit the key type")
    if length == 0:
        raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, "CKA_VALUE_LEN of 0")
    limit = MAX_DERIVED if available is None else available
    if length > limit:
        raise CKRError(too_short, f"{length} bytes asked, the mechanism gives {limit}")
    return ckk, length


def value(ckk, raw):
    """The derived key's CKA_VALUE: `raw` cut to length by the caller, with DES parity."""
    return fix_parity(raw) if ckk in FIXED_LENGTH else raw
