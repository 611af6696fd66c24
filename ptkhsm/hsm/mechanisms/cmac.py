"""CMAC (NIST SP 800-38B) over AES and Triple DES: the full-length mechanisms and
the _GENERAL ones whose parameter is the MAC length in bytes."""

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from ... import constants as C
from ...errors import CKRError
from . import Row, register
from .des import KEY_TYPES as DES_KEYS
from .des import cipher as des_cipher
from .hmac import Mac, MacVerify


class Cmac:
    def _start(self, row, key, param):
        block = row.info["block"]
        length = block
        if row.info.get("general"):
            if not isinstance(param, int) or not 1 <= param <= block:
                raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, f"CMAC length must be 1..{block}")
            length = param
        return cmac.CMAC(row.info["cipher"](key.attrs[C.CKA_VALUE])), length

    def sign(self, row, key, param):
        return Mac(*self._start(row, key, param))

    def verify(self, row, key, param):
        return MacVerify(*self._start(row, key, param))


_CMAC = Cmac()
_MAC = C.CKF_SIGN | C.CKF_VERIFY
_AES = {"cipher": algorithms.AES, "block": 16}
_DES = {"cipher": des_cipher, "block": 8}
register(
    Row(C.CKM_AES_CMAC, _CMAC, _MAC, (C.CKK_AES,), 16, 32, _AES),
    Row(C.CKM_AES_CMAC_GENERAL, _CMAC, _MAC, (C.CKK_AES,), 16, 32, {**_AES, "general": True}),
    Row(C.CKM_DES3_CMAC, _CMAC, _MAC, DES_KEYS, 16, 24, _DES),
    Row(C.CKM_DES3_CMAC_GENERAL, _CMAC, _MAC, DES_KEYS, 16, 24, {**_DES, "general": True}),
)
