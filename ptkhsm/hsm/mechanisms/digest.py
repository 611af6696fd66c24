"""Message digests: SHA-1, SHA-2 and SHA-3."""

from cryptography.hazmat.primitives import hashes

from ... import constants as C
from . import Row, register

# CKM -> cryptography hash class; also used by the HMAC, RSA and ECDSA families.
HASHES = {
    C.CKM_SHA_1: hashes.SHA1,
    C.CKM_SHA224: hashes.SHA224,
    C.CKM_SHA256: hashes.SHA256,
    C.CKM_SHA384: hashes.SHA384,
    C.CKM_SHA512: hashes.SHA512,
    C.CKM_SHA3_224: hashes.SHA3_224,
    C.CKM_SHA3_256: hashes.SHA3_256,
    C.CKM_SHA3_384: hashes.SHA3_384,
    C.CKM_SHA3_512: hashes.SHA3_512,
}


class Digester:
    __slots__ = ("_ctx",)

    def __init__(self, blank):
        self._ctx = blank.copy()

    def update(self, data):
        self._ctx.update(data)

    def final(self):
        return self._ctx.finalize()

    def oneshot(self, data):
        self._ctx.update(data)
        return self._ctx.finalize()


class Digest:
    def digest(self, row, param):
        return Digester(row.info["blank"])


_DIGEST = Digest()
# Each row keeps a fresh hash context that operations copy: a copy costs half of
# making a context (cryptography checks the algorithm's type on every Hash()).
register(*(Row(ckm, _DIGEST, C.CKF_DIGEST, info={"hash": cls, "blank": hashes.Hash(cls())})
           for ckm, cls in HASHES.items()))
