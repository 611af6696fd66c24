"""AES key wrap: RFC 3394 (CKM_AES_KEY_WRAP) and RFC 5649 with padding
(CKM_AES_KEY_WRAP_KWP, and CKM_AES_KEY_WRAP_PAD as the same thing — see
docs/decisions.md). Encrypt/decrypt and wrap/unwrap, single-part.

With the default initial values (A6A6A6A6A6A6A6A6, A65959A6) the work is
`cryptography`'s keywrap functions. PKCS#11 also lets the caller choose the
initial value, which those functions do not take: for that case only, the
wrapping function W of RFC 3394 §2.2.1 is written here over one AES-ECB context.
"""

import struct

from cryptography.hazmat.primitives import constant_time, keywrap
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ... import constants as C
from ...errors import CKRError
from . import Buffered, CipherWrap, Row, register

SEMIBLOCK = 8
KW_IV = bytes.fromhex("A6A6A6A6A6A6A6A6")   # RFC 3394 §2.2.3.1
KWP_ICV = bytes.fromhex("A65959A6")          # RFC 5649 §3
_COUNTER = struct.Struct(">Q")


def _xor_t(a, t):
    return _COUNTER.pack(_COUNTER.unpack(a)[0] ^ t)


def wrap_blocks(value, a, plain):
    """RFC 3394 W: initial value `a` (8 bytes), plain a multiple of 8 bytes, at least 16."""
    ecb = Cipher(algorithms.AES(value), modes.ECB()).encryptor()
    r = [plain[i:i + SEMIBLOCK] for i in range(0, len(plain), SEMIBLOCK)]
    n = len(r)
    for j in range(6):
        for i in range(n):
            b = ecb.update(a + r[i])
            a, r[i] = _xor_t(b[:SEMIBLOCK], n * j + i + 1), b[SEMIBLOCK:]
    return a + b"".join(r)


def unwrap_blocks(value, wrapped):
    """RFC 3394 W⁻¹ -> (recovered initial value, plain); the caller checks the value."""
    ecb = Cipher(algorithms.AES(value), modes.ECB()).decryptor()
    a = wrapped[:SEMIBLOCK]
    r = [wrapped[i:i + SEMIBLOCK] for i in range(SEMIBLOCK, len(wrapped), SEMIBLOCK)]
    n = len(r)
    for j in reversed(range(6)):
        for i in reversed(range(n)):
            b = ecb.update(_xor_t(a, n * j + i + 1) + r[i])
            a, r[i] = b[:SEMIBLOCK], b[SEMIBLOCK:]
    return a, b"".join(r)


def _integrity_failed():
    # One message for every way unwrapping can fail: no oracle on which check failed.
    return CKRError(C.CKR_ENCRYPTED_DATA_INVALID, "key wrap integrity check failed")


def kw_encrypt(value, iv, data):
    if len(data) % SEMIBLOCK or len(data) < 2 * SEMIBLOCK:
        raise CKRError(C.CKR_DATA_LEN_RANGE, "AES key wrap takes a multiple of 8 bytes, at least 16")
    if iv == KW_IV:
        return keywrap.aes_key_wrap(value, data)
    return wrap_blocks(value, iv, data)


def kw_decrypt(value, iv, data):
    if len(data) % SEMIBLOCK or len(data) < 3 * SEMIBLOCK:
        raise CKRError(C.CKR_ENCRYPTED_DATA_LEN_RANGE, "AES key wrap output is a multiple of 8 bytes, at least 24")
    if iv == KW_IV:
        try:
            return keywrap.aes_key_unwrap(value, data)
        except keywrap.InvalidUnwrap:
            raise _integrity_failed() from None
    a, plain = unwrap_blocks(value, data)
    if not constant_time.bytes_eq(a, iv):
        raise _integrity_failed()
    return plain


def kwp_encrypt(value, icv, data):
    """RFC 5649 §4.1: AIV = ICV | 32-bit length; zero padding; one AES block if it fits."""
    if not data:
        raise CKRError(C.CKR_DATA_LEN_RANGE, "AES key wrap with padding needs at least 1 byte")
    if len(data) >= 1 << 32:
        raise CKRError(C.CKR_DATA_LEN_RANGE, "AES key wrap with padding takes less than 4 GiB")
    if icv == KWP_ICV:
        return keywrap.aes_key_wrap_with_padding(value, data)
    aiv = icv + struct.pack(">I", len(data))
    padded = data + b"\0" * (-len(data) % SEMIBLOCK)
    if len(padded) == SEMIBLOCK:
        ecb = Cipher(algorithms.AES(value), modes.ECB()).encryptor()
        return ecb.update(aiv + padded) + ecb.finalize()
    return wrap_blocks(value, aiv, padded)


def kwp_decrypt(value, icv, data):
    """RFC 5649 §4.2: the ICV, a length within the last semiblock, zero padding."""
    if len(data) % SEMIBLOCK or len(data) < 2 * SEMIBLOCK:
        raise CKRError(C.CKR_ENCRYPTED_DATA_LEN_RANGE,
                       "AES key wrap with padding output is a multiple of 8 bytes, at least 16")
    if icv == KWP_ICV:
        try:
            return keywrap.aes_key_unwrap_with_padding(value, data)
        except keywrap.InvalidUnwrap:
            raise _integrity_failed() from None
    if len(data) == 2 * SEMIBLOCK:
        ecb = Cipher(algorithms.AES(value), modes.ECB()).decryptor()
        block = ecb.update(data) + ecb.finalize()
        a, padded = block[:SEMIBLOCK], block[SEMIBLOCK:]
    else:
        a, padded = unwrap_blocks(value, data)
    (length,) = struct.unpack(">I", a[4:])
    pad = len(padded) - length
    ok = constant_time.bytes_eq(a[:4], icv) & (0 <= pad < SEMIBLOCK)
    if not ok or padded[length:] != b"\0" * pad:
        raise _integrity_failed()
    return padded[:length]


# mode -> (encrypt, decrypt, default initial value)
MODES = {
    "kw": (kw_encrypt, kw_decrypt, KW_IV),
    "kwp": (kwp_encrypt, kwp_decrypt, KWP_ICV),
}


class AesKeyWrap(CipherWrap):
    """Single-part only (PKCS#11 v3.0 §2.16): updates are collected and run at the final call."""

    def _setup(self, row, key, param):
        encrypt, decrypt, default = MODES[row.info["mode"]]
        if param is None:
            param = default
        elif len(param) != len(default):
            raise CKRError(C.CKR_MECHANISM_PARAM_INVALID,
                           f"{row.info['mode'].upper()} initial value must be {len(default)} bytes")
        return encrypt, decrypt, key.attrs[C.CKA_VALUE], param

    def encrypt(self, row, key, param):
        encrypt, _, value, iv = self._setup(row, key, param)
        return Buffered(lambda data: encrypt(value, iv, data))

    def decrypt(self, row, key, param):
        _, decrypt, value, iv = self._setup(row, key, param)
        return Buffered(lambda data: decrypt(value, iv, data))

    def wrap(self, row, wrapping_key, param, blob):
        # PKCS#11: RFC 3394 wraps a key of any length, zero padded to 8 bytes; unwrapping
        # takes CKA_VALUE_LEN from the template to cut it back (row.info "zero_pad").
        if row.info["mode"] == "kw":
            blob = blob + b"\0" * (-len(blob) % SEMIBLOCK)
        return super().wrap(row, wrapping_key, param, blob)


_KW = AesKeyWrap()
_ALL = C.CKF_ENCRYPT | C.CKF_DECRYPT | C.CKF_WRAP | C.CKF_UNWRAP
_KEYS = (C.CKK_AES,)
register(
    Row(C.CKM_AES_KEY_WRAP, _KW, _ALL, _KEYS, 16, 32, {"mode": "kw", "zero_pad": True}),
    Row(C.CKM_AES_KEY_WRAP_KWP, _KW, _ALL, _KEYS, 16, 32, {"mode": "kwp"}),
    Row(C.CKM_AES_KEY_WRAP_PAD, _KW, _ALL, _KEYS, 16, 32, {"mode": "kwp"}),
)
