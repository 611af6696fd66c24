"""Simple key derivations (PKCS#11 v2.40 current mechanisms: "Miscellaneous simple key
derivation mechanisms", "SHA-1 key derivation" and its SHA-2 siblings, "Key derivation
by data encryption"): SHA*_KEY_DERIVATION, CONCATENATE_BASE_AND_KEY,
CONCATENATE_BASE_AND_DATA, CONCATENATE_DATA_AND_BASE, XOR_BASE_AND_DATA and
AES/DES3 _ECB/_CBC_ENCRYPT_DATA.

CKM_EXTRACT_KEY_FROM_KEY (PTK-C offers it; v2.40 "Extraction of one key from another")
takes CKA_VALUE_LEN bytes of the base key from a bit index on, wrapping around.

Each mechanism computes a byte string; the derived secret key is its leftmost
bytes, of the type and length `derived.type_and_length` gives (one rule for
every derivation; DES keys get odd parity). The encrypt-data mechanisms, whose
output is as long as their data, answer a too-long CKA_VALUE_LEN with
CKR_MECHANISM_PARAM_INVALID ("data too short for the key", v2.20 §12.14.3).

A sensitive base (or second key) makes the derived key sensitive, an
unextractable one makes it unextractable; CKA_ALWAYS_SENSITIVE and
CKA_NEVER_EXTRACTABLE follow every key that went in (the policy does the base
key; the second key of CONCATENATE_BASE_AND_KEY lowers them here).
"""

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ... import constants as C
from ... import mechparams as P
from ...errors import CKRError
from . import KEY_TYPES, Row, register
from . import derived, des


def _value(key):
    return key.attrs[C.CKA_VALUE]


def _data(param):
    if not isinstance(param, bytes) or not param:
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "derivation data missing")
    return param


def _digest(row, base, param):
    digest = hashes.Hash(row.info["hash"]())
    digest.update(_value(base))
    return digest.finalize()


def _base_and_key(row, base, other):
    if other.attrs.get(C.CKA_CLASS) != C.CKO_SECRET_KEY:
        raise CKRError(C.CKR_KEY_TYPE_INCONSISTENT, "the second key must be a secret key")
    return _value(base) + _value(other)


def _base_and_data(row, base, param):
    return _value(base) + _data(param)


def _data_and_base(row, base, param):
    return _data(param) + _value(base)


def _xor(row, base, param):
    # The output is as long as the shorter of the two (zip stops there).
    return bytes(a ^ b for a, b in zip(_value(base), _data(param)))


def _encrypt_data(row, base, param):
    algorithm, block = row.info["cipher"], row.info["block"]
    if row.info["mode"] == "cbc":
        if not isinstance(param, P.CbcDeriveParams) or len(param.iv) != block:
            raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, f"needs a {block}-byte IV and data")
        mode, data = modes.CBC(param.iv), param.data
    else:
        mode, data = modes.ECB(), param
    if not isinstance(data, bytes) or not data or len(data) % block:
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, f"data must be a non-empty multiple of {block} bytes")
    encryptor = Cipher(algorithm(_value(base)), mode).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def _inherited(keys):
    """Attributes the derived key takes from the keys that went in (see the module doc)."""
    out = {}
    if any(k.attrs.get(C.CKA_SENSITIVE) for k in keys):
        out[C.CKA_SENSITIVE] = True
    if not all(k.attrs.get(C.CKA_EXTRACTABLE) for k in keys):
        out[C.CKA_EXTRACTABLE] = False
    if len(keys) > 1:
        out[C.CKA_ALWAYS_SENSITIVE] = all(k.attrs.get(C.CKA_ALWAYS_SENSITIVE) for k in keys)
        out[C.CKA_NEVER_EXTRACTABLE] = all(k.attrs.get(C.CKA_NEVER_EXTRACTABLE) for k in keys)
    return out


def _extract(row, base, param):
    """v2.40 §2.39.7: the base key's bits from bit `param` on (bit 0 the high bit of the
    first byte), wrapping around, as many as the key needs: here the base key rotated
    left by `param` bits and repeated, of which the caller takes the leftmost bytes."""
    if not isinstance(param, int):
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "CKM_EXTRACT_KEY_FROM_KEY needs CK_EXTRACT_PARAMS")
    value = _value(base)
    bits = len(value) * 8
    number, shift = int.from_bytes(value, "big"), param % bits
    rotated = ((number << shift) | (number >> (bits - shift))) & ((1 << bits) - 1)
    return rotated.to_bytes(len(value), "big") * (derived.MAX_DERIVED // len(value) + 1)


class Simple:
    def derive(self, row, base, param, template):
        output = row.info["output"](row, base, param)
        available = None if row.info.get("endless") else len(output)
        ckk, length = derived.type_and_length(
            template, available, too_short=row.info.get("too_short", C.CKR_TEMPLATE_INCONSISTENT))
        keys = [base, param] if row.ckm == C.CKM_CONCATENATE_BASE_AND_KEY else [base]
        return C.CKO_SECRET_KEY, ckk, {C.CKA_VALUE: derived.value(ckk, output[:length]), **_inherited(keys)}


_SIMPLE = Simple()
_DERIVE = C.CKF_DERIVE
# Every secret key type registered so far (this module is loaded last).
SECRET_TYPES = tuple(ckk for ckk, handler in KEY_TYPES.items() if C.CKO_SECRET_KEY in handler.attrs)

_DIGESTS = {
    C.CKM_SHA1_KEY_DERIVATION: hashes.SHA1, C.CKM_SHA224_KEY_DERIVATION: hashes.SHA224,
    C.CKM_SHA256_KEY_DERIVATION: hashes.SHA256, C.CKM_SHA384_KEY_DERIVATION: hashes.SHA384,
    C.CKM_SHA512_KEY_DERIVATION: hashes.SHA512,
}
for _ckm, _hash in _DIGESTS.items():
    register(Row(_ckm, _SIMPLE, _DERIVE, SECRET_TYPES, info={"output": _digest, "hash": _hash}))

register(
    Row(C.CKM_CONCATENATE_BASE_AND_KEY, _SIMPLE, _DERIVE, SECRET_TYPES, info={"output": _base_and_key}),
    Row(C.CKM_CONCATENATE_BASE_AND_DATA, _SIMPLE, _DERIVE, SECRET_TYPES, info={"output": _base_and_data}),
    Row(C.CKM_CONCATENATE_DATA_AND_BASE, _SIMPLE, _DERIVE, SECRET_TYPES, info={"output": _data_and_base}),
    Row(C.CKM_XOR_BASE_AND_DATA, _SIMPLE, _DERIVE, SECRET_TYPES, info={"output": _xor}),
    # The extracted bits repeat the base key: any length, so CKA_VALUE_LEN must say which.
    Row(C.CKM_EXTRACT_KEY_FROM_KEY, _SIMPLE, _DERIVE, SECRET_TYPES,
        info={"output": _extract, "endless": True}),
)

_ENCRYPT_DATA = {"output": _encrypt_data, "too_short": C.CKR_MECHANISM_PARAM_INVALID}
_AES = {**_ENCRYPT_DATA, "cipher": algorithms.AES, "block": 16}
_DES = {**_ENCRYPT_DATA, "cipher": des.cipher, "block": 8}
register(
    Row(C.CKM_AES_ECB_ENCRYPT_DATA, _SIMPLE, _DERIVE, (C.CKK_AES,), 16, 32, {**_AES, "mode": "ecb"}),
    Row(C.CKM_AES_CBC_ENCRYPT_DATA, _SIMPLE, _DERIVE, (C.CKK_AES,), 16, 32, {**_AES, "mode": "cbc"}),
    Row(C.CKM_DES3_ECB_ENCRYPT_DATA, _SIMPLE, _DERIVE, des.KEY_TYPES, 16, 24, {**_DES, "mode": "ecb"}),
    Row(C.CKM_DES3_CBC_ENCRYPT_DATA, _SIMPLE, _DERIVE, des.KEY_TYPES, 16, 24, {**_DES, "mode": "cbc"}),
)
