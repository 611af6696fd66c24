"""DES: single-, double- and triple-length keys (CKK_DES, CKK_DES2, CKK_DES3),
their generation, ECB, CBC and CBC-PAD (which also wraps and unwraps), and
single-DES CBC-MAC (CKM_DES_MAC, FIPS 113).

Single DES (56-bit keys) is broken by exhaustive search; it is offered because
PTK-C offers it and migrated PTK-C applications and test tools use it. Its
rows carry info["weak"] (docs/decisions.md: weak mechanisms).

DES keys carry a parity bit per byte; generation and derivation set odd
parity, as PKCS#11 asks. Given values (C_CreateObject) are taken as they
are: DES ignores the parity bits, and published vectors do not all respect
them.
"""

import os

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from ... import constants as C
from ...errors import CKRError
from . import CipherWrap, Row, register, register_key_type
from .aes import Stream
from .aes_mac import CbcMac, CbcMacVerify
from .secret import SecretKeyGen, secret_key_type

BLOCK = 8
LENGTH = {C.CKK_DES: 8, C.CKK_DES2: 16, C.CKK_DES3: 24}  # the fixed CKA_VALUE length of each key type
KEY_TYPES = (C.CKK_DES2, C.CKK_DES3)  # what the DES3 mechanisms take
SINGLE = (C.CKK_DES,)
WEAK = {"weak": True}


def fix_parity(value):
    """Each byte's low bit set so the byte has an odd number of 1 bits (FIPS 46-3)."""
    return bytes(b & 0xFE | (bin(b & 0xFE).count("1") + 1) % 2 for b in value)


def random_key(length):
    return fix_parity(os.urandom(length))


def cipher(value):
    """TripleDES for a DES, DES2 or DES3 value; a DES2 key K1|K2 is used as K1|K2|K1 and a
    DES key K as K|K|K, which is single DES (given whole: `cryptography` deprecates
    8- and 16-byte keys)."""
    if len(value) == 8:
        return TripleDES(value * 3)
    return TripleDES(value + value[:8] if len(value) == 16 else value)


_ECB = modes.ECB()
_ZERO_BLOCK = bytes(BLOCK)


def kcv(value):
    """PKCS#11 3.0 §6.8: first 3 bytes of ECB(key, zero block) (update() gives the whole block)."""
    return Cipher(cipher(value), _ECB).encryptor().update(_ZERO_BLOCK)[:3]


for _ckk, _length in LENGTH.items():
    register_key_type(secret_key_type(_ckk, (_length,), kcv))


def _mode(row, param):
    if row.info["mode"] == "ecb":
        return modes.ECB()
    if not isinstance(param, bytes) or len(param) != BLOCK:
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "DES CBC needs an 8-byte IV")
    return modes.CBC(param)


class Des(SecretKeyGen, CipherWrap):
    def generate(self, row, param, template):
        cls, ckk, material = super().generate(row, param, template)
        material[C.CKA_VALUE] = fix_parity(material[C.CKA_VALUE])
        return cls, ckk, material

    def encrypt(self, row, key, param):
        ctx = Cipher(cipher(key.attrs[C.CKA_VALUE]), _mode(row, param)).encryptor()
        return Stream(ctx, C.CKR_DATA_LEN_RANGE, pad=row.info["mode"] == "cbc-pad", block_bits=64)

    def decrypt(self, row, key, param):
        ctx = Cipher(cipher(key.attrs[C.CKA_VALUE]), _mode(row, param)).decryptor()
        return Stream(ctx, C.CKR_ENCRYPTED_DATA_LEN_RANGE, unpad=row.info["mode"] == "cbc-pad",
                      block_bits=64)

    # CKM_DES_MAC: FIPS 113 CBC-MAC, half a block (4 bytes), as PKCS#11 defines it.
    def sign(self, row, key, param):
        return CbcMac(cipher(key.attrs[C.CKA_VALUE]), BLOCK // 2)

    def verify(self, row, key, param):
        return CbcMacVerify(cipher(key.attrs[C.CKA_VALUE]), BLOCK // 2)


_DES = Des()
_CIPHER = C.CKF_ENCRYPT | C.CKF_DECRYPT
# Key sizes in bytes, as PTK-C reports them for these mechanisms.
register(
    Row(C.CKM_DES2_KEY_GEN, _DES, C.CKF_GENERATE, min_key=16, max_key=16,
        info={"ckk": C.CKK_DES2, "lengths": (16,), "fixed_length": 16}),
    Row(C.CKM_DES3_KEY_GEN, _DES, C.CKF_GENERATE, min_key=24, max_key=24,
        info={"ckk": C.CKK_DES3, "lengths": (24,), "fixed_length": 24}),
    Row(C.CKM_DES3_ECB, _DES, _CIPHER, KEY_TYPES, 16, 24, {"mode": "ecb"}),
    Row(C.CKM_DES3_CBC, _DES, _CIPHER, KEY_TYPES, 16, 24, {"mode": "cbc"}),
    Row(C.CKM_DES3_CBC_PAD, _DES, _CIPHER | C.CKF_WRAP | C.CKF_UNWRAP, KEY_TYPES, 16, 24,
        {"mode": "cbc-pad"}),
    Row(C.CKM_DES_KEY_GEN, _DES, C.CKF_GENERATE, min_key=8, max_key=8,
        info={"ckk": C.CKK_DES, "lengths": (8,), "fixed_length": 8, **WEAK}),
    Row(C.CKM_DES_ECB, _DES, _CIPHER, SINGLE, 8, 8, {"mode": "ecb", **WEAK}),
    Row(C.CKM_DES_CBC, _DES, _CIPHER, SINGLE, 8, 8, {"mode": "cbc", **WEAK}),
    Row(C.CKM_DES_CBC_PAD, _DES, _CIPHER | C.CKF_WRAP | C.CKF_UNWRAP, SINGLE, 8, 8,
        {"mode": "cbc-pad", **WEAK}),
    Row(C.CKM_DES_MAC, _DES, C.CKF_SIGN | C.CKF_VERIFY, SINGLE, 8, 8, WEAK),
)
