"""AES-MAC: CKM_AES_MAC and CKM_AES_MAC_GENERAL (PKCS#11 "general block cipher
MAC", FIPS 113 with AES): CBC encryption under a zero IV, the input padded with
zero bytes to a whole number of blocks (at least one), the MAC taken from the
start of the last cipher block. CKM_AES_MAC gives half a block (8 bytes),
CKM_AES_MAC_GENERAL the CK_MAC_GENERAL_PARAMS length, 1..16 bytes.

CBC-MAC is only safe for messages of one fixed length; CKM_AES_CMAC is the
mechanism to prefer.
"""

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ... import constants as C
from ...errors import CKRError
from . import Row, check_mac, register

BLOCK = 16


class CbcMac:
    """Sign: update() any number of times, final() -> MAC."""

    __slots__ = ("_ctx", "_count", "_last", "_length")

    def __init__(self, value, length):
        self._ctx = Cipher(algorithms.AES(value), modes.CBC(bytes(BLOCK))).encryptor()
        self._count = 0
        self._last = b""
        self._length = length

    def update(self, data):
        out = self._ctx.update(data)   # whole blocks only; the context keeps the rest
        if out:
            self._last = out[-BLOCK:]
        self._count += len(data)

    def _mac(self):
        pad = -self._count % BLOCK or (BLOCK if self._count == 0 else 0)
        if pad:
            self._last = self._ctx.update(bytes(pad))[-BLOCK:]
        return self._last[:self._length]

    def final(self):
        return self._mac()

    def oneshot(self, data):
        self.update(data)
        return self.final()


class CbcMacVerify(CbcMac):
    __slots__ = ()

    def final(self, signature):
        check_mac(self._mac(), signature)

    def oneshot(self, data, signature):
        self.update(data)
        self.final(signature)


class AesMac:
    def _length(self, row, param):
        if not row.info.get("general"):
            return BLOCK // 2
        if not isinstance(param, int) or not 1 <= param <= BLOCK:
            raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, f"MAC length must be 1..{BLOCK}")
        return param

    def sign(self, row, key, param):
        return CbcMac(key.attrs[C.CKA_VALUE], self._length(row, param))

    def verify(self, row, key, param):
        return CbcMacVerify(key.attrs[C.CKA_VALUE], self._length(row, param))


_AES_MAC = AesMac()
_MAC = C.CKF_SIGN | C.CKF_VERIFY
register(
    Row(C.CKM_AES_MAC, _AES_MAC, _MAC, (C.CKK_AES,), 16, 32),
    Row(C.CKM_AES_MAC_GENERAL, _AES_MAC, _MAC, (C.CKK_AES,), 16, 32, info={"general": True}),
)
