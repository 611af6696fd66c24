"""EdDSA (RFC 8032) with CKK_EC_EDWARDS keys: Ed25519 and Ed448.

CKM_EDDSA without a parameter is pure Ed25519 (PKCS#11 v3.0 §2.3.14); Ed448
always needs CK_EDDSA_PARAMS (phFlag FALSE for pure Ed448), and without it is
CKR_MECHANISM_PARAM_INVALID. CK_EDDSA_PARAMS may also select Ed25519ctx,
Ed25519ph, Ed448 with a context or Ed448ph; `cryptography` implements none of
these, so a parameter is accepted only when it asks for the pure scheme
(phFlag FALSE, empty context) and refused otherwise with
CKR_MECHANISM_PARAM_INVALID.
"""

from ... import constants as C
from ... import mechparams as P
from ...errors import CKRError
from . import Buffered, Row, crypto_errors, okp, register, register_key_type

register_key_type(okp.key_type(C.CKK_EC_EDWARDS, okp.EDWARDS))


def _check_param(param, curve):
    if param is None:
        if curve is okp.ED448:
            raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "Ed448 needs CK_EDDSA_PARAMS (phFlag FALSE: pure Ed448)")
        return
    if not isinstance(param, P.EddsaParams):
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "CKM_EDDSA takes CK_EDDSA_PARAMS or nothing")
    if param.prehash:
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "Ed25519ph / Ed448ph are not supported")
    if param.context:
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "EdDSA contexts are not supported")


class Eddsa:
    def generate_pair(self, row, param, public_template, private_template):
        _, public, private = okp.generate(okp.EDWARDS, public_template, private_template)
        return C.CKK_EC_EDWARDS, public, private

    def sign(self, row, key, param):
        curve, private = okp.private_key(key, okp.EDWARDS)
        _check_param(param, curve)
        return Buffered(private.sign)

    def verify(self, row, key, param):
        curve, public = okp.public_key(key, okp.EDWARDS)
        _check_param(param, curve)
        size = 2 * curve.public_len

        def run(data, signature):
            if len(signature) != size:
                raise CKRError(C.CKR_SIGNATURE_LEN_RANGE, f"signature of {len(signature)} bytes, {size} expected")
            with crypto_errors():
                public.verify(signature, data)
        return Buffered(run)


_EDDSA = Eddsa()
MIN_BITS, MAX_BITS = okp.ED25519.bits, okp.ED448.bits
register(
    Row(C.CKM_EC_EDWARDS_KEY_PAIR_GEN, _EDDSA, C.CKF_GENERATE_KEY_PAIR, (), MIN_BITS, MAX_BITS),
    Row(C.CKM_EDDSA, _EDDSA, C.CKF_SIGN | C.CKF_VERIFY, (C.CKK_EC_EDWARDS,), MIN_BITS, MAX_BITS),
)
