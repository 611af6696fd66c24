"""DSA (FIPS 186-4): domain parameters, key pairs, CKM_DSA and CKM_DSA_SHA*.

Primes of 1024, 2048, 3072 and 4096 bits with subprimes of 160, 224 or 256
bits, the sizes `cryptography` accepts. CKM_DSA signs a digest of 20, 28, 32,
48 or 64 bytes (PKCS#11 v2.40), truncated to the subprime's length as FIPS
186-4 says. Signatures are r || s, each as long as the subprime.
"""

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, utils

from ... import constants as C
from ...errors import CKRError
from . import (Buffered, HashThenSign, Row, crypto_errors, finite_field_key_type, from_big, register,
               register_key_type, remembered, to_big)
from . import pkcs8
from .digest import HASHES

MIN_BITS, MAX_BITS = 1024, 4096
PRIME_SIZES = (1024, 2048, 3072, 4096)
_DOMAIN = (C.CKA_PRIME, C.CKA_SUBPRIME, C.CKA_BASE)
# CKM_DSA: digest size -> the hash `cryptography` is told it came from (only its size matters).
_DIGEST_OF_SIZE = {h.digest_size: h for h in (HASHES[C.CKM_SHA_1], HASHES[C.CKM_SHA224], HASHES[C.CKM_SHA256],
                                              HASHES[C.CKM_SHA384], HASHES[C.CKM_SHA512])}


def _invalid(what):
    return CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, f"invalid DSA {what}")


def _parameter_numbers(attrs):
    return dsa.DSAParameterNumbers(*(from_big(attrs[t]) for t in _DOMAIN))


def _domain_attrs(numbers):
    return {C.CKA_PRIME: to_big(numbers.p), C.CKA_SUBPRIME: to_big(numbers.q), C.CKA_BASE: to_big(numbers.g)}


def _public_from_attrs(attrs):
    params = _parameter_numbers(attrs)
    y = from_big(attrs[C.CKA_VALUE])
    if not 1 < y < params.p:
        raise _invalid("public value")
    try:
        return dsa.DSAPublicNumbers(y, params).public_key()
    except ValueError:
        raise _invalid("public key") from None


def _private_from_attrs(attrs):
    params = _parameter_numbers(attrs)
    x = from_big(attrs[C.CKA_VALUE])
    if not 0 < x < params.q:
        raise _invalid("private value")
    public = dsa.DSAPublicNumbers(pow(params.g, x, params.p), params)
    try:
        return dsa.DSAPrivateNumbers(x, public).private_key()
    except ValueError:
        raise _invalid("private key") from None


def public_key(key):
    return remembered(key, "dsa-public", _public_from_attrs)


def private_key(key):
    return remembered(key, "dsa-private", _private_from_attrs)


def _spki(public):
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_prime_bits(attrs):
    """CKA_PRIME_BITS is computed; given (C_GenerateKey, or C_CreateObject) it must agree."""
    bits = from_big(attrs[C.CKA_PRIME]).bit_length()
    if attrs.get(C.CKA_PRIME_BITS, bits) != bits:
        raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, "CKA_PRIME_BITS does not match CKA_PRIME")
    attrs[C.CKA_PRIME_BITS] = bits


def _complete(cls, attrs):
    if cls == C.CKO_DOMAIN_PARAMETERS:
        try:
            _parameter_numbers(attrs).parameters()
        except ValueError:
            raise _invalid("domain parameters") from None
        _check_prime_bits(attrs)
        return
    if cls == C.CKO_PUBLIC_KEY:
        public = _public_from_attrs(attrs)
    else:
        public = _private_from_attrs(attrs).public_key()
    attrs[C.CKA_PUBLIC_KEY_INFO] = _spki(public)


def _export(cls, attrs):
    return pkcs8.export(_private_from_attrs(attrs))


def _load(cls, blob):
    private = pkcs8.load(cls, blob, dsa.DSAPrivateKey, "DSA")
    numbers = private.private_numbers()
    return {**_domain_attrs(numbers.public_numbers.parameter_numbers), C.CKA_VALUE: to_big(numbers.x)}


register_key_type(finite_field_key_type(C.CKK_DSA, _DOMAIN, _complete, _export, _load))


# -- signatures -------------------------------------------------------------------
def _subprime_bytes(key):
    return (key.parameters().parameter_numbers().q.bit_length() + 7) // 8


def _sign_digest(private, digest, algorithm):
    r, s = utils.decode_dss_signature(private.sign(digest, utils.Prehashed(algorithm)))
    n = _subprime_bytes(private)
    return r.to_bytes(n, "big") + s.to_bytes(n, "big")


def _verify_digest(public, digest, algorithm, signature):
    n = _subprime_bytes(public)
    if len(signature) != 2 * n:
        raise CKRError(C.CKR_SIGNATURE_LEN_RANGE, f"signature of {len(signature)} bytes, {2 * n} expected")
    der = utils.encode_dss_signature(int.from_bytes(signature[:n], "big"), int.from_bytes(signature[n:], "big"))
    with crypto_errors():
        public.verify(der, digest, utils.Prehashed(algorithm))


def _raw_digest(data):
    """CKM_DSA: the input is the digest; its size names the hash."""
    algorithm = _DIGEST_OF_SIZE.get(len(data))
    if algorithm is None:
        raise CKRError(C.CKR_DATA_LEN_RANGE, f"CKM_DSA signs a digest of 20, 28, 32, 48 or 64 bytes, not {len(data)}")
    return data, algorithm()


def _parameters(template):
    missing = [t for t in _DOMAIN if t not in template]
    if missing:
        raise CKRError(C.CKR_TEMPLATE_INCOMPLETE, "DSA needs CKA_PRIME, CKA_SUBPRIME and CKA_BASE")
    try:
        return _parameter_numbers(template).parameters()
    except ValueError:
        raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, "invalid DSA domain parameters") from None


class Dsa:
    def generate(self, row, param, template):
        """CKM_DSA_PARAMETER_GEN: new domain parameters of CKA_PRIME_BITS bits."""
        bits = template.get(C.CKA_PRIME_BITS)
        if bits is None:
            raise CKRError(C.CKR_TEMPLATE_INCOMPLETE, "CKA_PRIME_BITS missing")
        if bits not in PRIME_SIZES:
            raise CKRError(C.CKR_KEY_SIZE_RANGE, f"DSA primes of {PRIME_SIZES} bits, not {bits}")
        numbers = dsa.generate_parameters(bits).parameter_numbers()
        return C.CKO_DOMAIN_PARAMETERS, C.CKK_DSA, _domain_attrs(numbers)

    def generate_pair(self, row, param, public_template, private_template):
        parameters = _parameters(public_template)
        for attr_type in _DOMAIN:
            if private_template.get(attr_type, public_template[attr_type]) != public_template[attr_type]:
                raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, "domain parameters differ between the templates")
        private = parameters.generate_private_key()
        numbers = private.private_numbers()
        domain = {t: public_template[t] for t in _DOMAIN}
        return (C.CKK_DSA, {C.CKA_VALUE: to_big(numbers.public_numbers.y)},
                {**domain, C.CKA_VALUE: to_big(numbers.x)})

    def sign(self, row, key, param):
        private = private_key(key)
        digest = row.info.get("hash")
        if digest is None:
            return Buffered(lambda data: _sign_digest(private, *_raw_digest(data)))
        return HashThenSign(digest(), lambda d: _sign_digest(private, d, digest()))

    def verify(self, row, key, param):
        public = public_key(key)
        digest = row.info.get("hash")
        if digest is None:
            return Buffered(lambda data, sig: _verify_digest(public, *_raw_digest(data), sig))
        return HashThenSign(digest(), lambda d, sig: _verify_digest(public, d, digest(), sig))


_DSA = Dsa()
_KEYS = (C.CKK_DSA,)
_SIGN = C.CKF_SIGN | C.CKF_VERIFY
register(
    Row(C.CKM_DSA_PARAMETER_GEN, _DSA, C.CKF_GENERATE, (), MIN_BITS, MAX_BITS),
    Row(C.CKM_DSA_KEY_PAIR_GEN, _DSA, C.CKF_GENERATE_KEY_PAIR, (), MIN_BITS, MAX_BITS),
    Row(C.CKM_DSA, _DSA, _SIGN, _KEYS, MIN_BITS, MAX_BITS),
    *(Row(ckm, _DSA, _SIGN, _KEYS, MIN_BITS, MAX_BITS, info={"hash": HASHES[digest]})
      for ckm, digest in ((C.CKM_DSA_SHA1, C.CKM_SHA_1), (C.CKM_DSA_SHA224, C.CKM_SHA224),
                          (C.CKM_DSA_SHA256, C.CKM_SHA256), (C.CKM_DSA_SHA384, C.CKM_SHA384),
                          (C.CKM_DSA_SHA512, C.CKM_SHA512))),
)
