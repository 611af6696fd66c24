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
    """Sign: update() any number of times, final() -> MAC. `algorithm` is a keyed
    `cryptography` block cipher (AES here, single DES for CKM_DES_MAC)."""

    __slots__ = ("_ctx", "_count", "_last", "_length", "_block")

    def __init__(self, algorithm, length):
        self._block = algorithm.block_size // 8
        self._ctx = Cipher(algorithm, modes.CBC(bytes(self._block))).encryptor()
        self._count = 0
        self._last = b""
        self._length = length

    def update(self, data):
        out = self._ctx.update(data)   # whole blocks only; the context keeps the rest
        if out:
            self._last = out[-self._block:]
        self._count += len(data)

    def _mac(self):
        block = self._block
        pad = -self._count % block or (block if self._count == 0 else 0)
        if pad:
            self._last = self._ctx.update(bytes(pad))[-block:]
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
        return CbcMac(algorithms.AES(key.attrs[C.CKA_VALUE]), self._length(row, param))

    def verify(self, row, key, param):
        return CbcMacVerify(algorithms.AES(key.attrs[C.CKA_VALUE]), self._length(row, param))


_AES_MAC = AesMac()
_MAC = C.CKF_SIGN | C.CKF_VERIFY
register(
    Row(C.CKM_AES_MAC, _AES_MAC, _MAC, (C.CKK_AES,), 16, 32),
    Row(C.CKM_AES_MAC_GENERAL, _AES_MAC, _MAC, (C.CKK_AES,), 16, 32, info={"general": True}),
)
