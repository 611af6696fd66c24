"""Message digests: SHA-1, SHA-2 and SHA-3, and MD5 (RFC 1321).

MD5 is broken for collision resistance; it is offered because PTK-C offers it
(migrated applications use CKM_MD5 / MD5_HMAC / MD5_RSA_PKCS). It is kept out of
HASHES, so no mechanism parameter (PSS, OAEP, KDFs) can name it.
"""

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
WEAK_HASHES = {C.CKM_MD5: hashes.MD5}


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
register(*(Row(ckm, _DIGEST, C.CKF_DIGEST, info={"blank": hashes.Hash(cls()), "weak": ckm in WEAK_HASHES})
           for ckm, cls in {**HASHES, **WEAK_HASHES}.items()))
