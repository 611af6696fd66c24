"""Generic secrets and HMAC (SHA-1, SHA-2, SHA-3, and MD5 as PTK-C offers it: RFC 2104)."""

from cryptography.hazmat.primitives import hmac

from ... import constants as C
from ...errors import CKRError
from . import Row, check_mac, register, register_key_type, remembered
from .digest import HASHES, WEAK_HASHES
from .secret import SecretKeyGen, secret_key_type

LENGTHS = range(1, 1025)
MAX_KEY = 1024

register_key_type(secret_key_type(C.CKK_GENERIC_SECRET, LENGTHS))


class Mac:
    """A MAC operation over any context with update/finalize (HMAC, CMAC), cut to `length`."""

    __slots__ = ("_ctx", "_length")

    def __init__(self, ctx, length):
        self._ctx = ctx
        self._length = length

    def update(self, data):
        self._ctx.update(data)

    def final(self):
        return self._ctx.finalize()[:self._length]

    def oneshot(self, data):
        self._ctx.update(data)
        return self.final()


class MacVerify(Mac):
    __slots__ = ()

    def final(self, signature):
        check_mac(super().final(), signature)

    def oneshot(self, data, signature):
        self._ctx.update(data)
        self.final(signature)


class Hmac(SecretKeyGen):
    def _length(self, row, param):
        size = row.info["hash"].digest_size
        if row.info.get("general"):
            if not isinstance(param, int) or not 1 <= param <= size:
                raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, f"MAC length must be 1..{size}")
            return param
        return size

    def _keyed(self, row, key):
        """A copy of the key's HMAC context, keyed once per key and hash (the copy is cheaper)."""
        algorithm = row.info["hash"]
        return remembered(key, ("hmac", algorithm),
                          lambda attrs: hmac.HMAC(attrs[C.CKA_VALUE], algorithm())).copy()

    def sign(self, row, key, param):
        return Mac(self._keyed(row, key), self._length(row, param))

    def verify(self, row, key, param):
        return MacVerify(self._keyed(row, key), self._length(row, param))


_HMAC = Hmac()
_MAC = C.CKF_SIGN | C.CKF_VERIFY
HMAC_OF = {
    C.CKM_SHA_1: (C.CKM_SHA_1_HMAC, C.CKM_SHA_1_HMAC_GENERAL, C.CKK_SHA_1_HMAC),
    C.CKM_SHA224: (C.CKM_SHA224_HMAC, C.CKM_SHA224_HMAC_GENERAL, C.CKK_SHA224_HMAC),
    C.CKM_SHA256: (C.CKM_SHA256_HMAC, C.CKM_SHA256_HMAC_GENERAL, C.CKK_SHA256_HMAC),
    C.CKM_SHA384: (C.CKM_SHA384_HMAC, C.CKM_SHA384_HMAC_GENERAL, C.CKK_SHA384_HMAC),
    C.CKM_SHA512: (C.CKM_SHA512_HMAC, C.CKM_SHA512_HMAC_GENERAL, C.CKK_SHA512_HMAC),
    C.CKM_SHA3_224: (C.CKM_SHA3_224_HMAC, C.CKM_SHA3_224_HMAC_GENERAL, C.CKK_SHA3_224_HMAC),
    C.CKM_SHA3_256: (C.CKM_SHA3_256_HMAC, C.CKM_SHA3_256_HMAC_GENERAL, C.CKK_SHA3_256_HMAC),
    C.CKM_SHA3_384: (C.CKM_SHA3_384_HMAC, C.CKM_SHA3_384_HMAC_GENERAL, C.CKK_SHA3_384_HMAC),
    C.CKM_SHA3_512: (C.CKM_SHA3_512_HMAC, C.CKM_SHA3_512_HMAC_GENERAL, C.CKK_SHA3_512_HMAC),
}

# MD5-HMAC (a weak mechanism, docs/decisions.md): keyed by generic secrets and CKK_MD5_HMAC.
WEAK_HMAC_OF = {C.CKM_MD5: (C.CKM_MD5_HMAC, C.CKM_MD5_HMAC_GENERAL, C.CKK_MD5_HMAC)}

register(Row(C.CKM_GENERIC_SECRET_KEY_GEN, _HMAC, C.CKF_GENERATE, min_key=1, max_key=MAX_KEY,
             info={"ckk": C.CKK_GENERIC_SECRET, "lengths": LENGTHS}))
for digest_ckm, (hmac_ckm, general_ckm, hmac_ckk) in {**HMAC_OF, **WEAK_HMAC_OF}.items():
    register_key_type(secret_key_type(hmac_ckk, LENGTHS))
    keys = (C.CKK_GENERIC_SECRET, hmac_ckk)
    info = {"hash": {**HASHES, **WEAK_HASHES}[digest_ckm], "weak": digest_ckm in WEAK_HASHES}
    register(Row(hmac_ckm, _HMAC, _MAC, keys, 1, MAX_KEY, info=info),
             Row(general_ckm, _HMAC, _MAC, keys, 1, MAX_KEY, info={**info, "general": True}))
