"""PKCS #3 Diffie-Hellman: domain parameters, key pairs and CKM_DH_PKCS_DERIVE.

Primes of 1024 to 8192 bits (parameter generation: up to 4096, generator 2).
The derive parameter is the other party's public value, a big-endian
integer. The secret value Z is as long as the prime (PKCS #3); the derived
key is its trailing bytes (PKCS#11: "the truncation removes bytes from the
leading end of the secret value"), as many as `derived.type_and_length` says
(the rule every derivation shares).

`cryptography` 50 deprecates finite-field DH; its names come from ptkhsm.ffdh,
which says why they do not warn. OpenSSL checks a prime it does
not know each time a key is loaded (0.2 s for a 2048-bit safe prime, 1 s at
2236 bits); validated parameters are cached, and so are the key objects.
"""

import functools
import secrets

from ... import constants as C
from ...errors import CKRError
from ...ffdh import DHParameterNumbers, DHPrivateNumbers, DHPublicNumbers, generate_parameters
from . import Row, finite_field_key_type, from_big, register, register_key_type, remembered, to_big
from . import derived, pkcs8
from .der import asn1

MIN_BITS, MAX_BITS = 1024, 8192
MAX_GENERATE_BITS = 4096
GENERATOR = 2
_DOMAIN = (C.CKA_PRIME, C.CKA_BASE)
DH_KEY_AGREEMENT = "1.2.840.113549.1.3.1"  # PKCS #3 dhKeyAgreement


def spki(p, g, y):
    """SubjectPublicKeyInfo of a PKCS #3 DH key (dhKeyAgreement, DHParameter), as OpenSSL writes it."""
    der = asn1()
    return der.DhPublicKeyInfo({"algorithm": {"algorithm": DH_KEY_AGREEMENT, "parameters": {"p": p, "g": g}},
                                "public_key": der.core.Integer(y).dump()}).dump()


@functools.lru_cache(maxsize=32)
def _parameters(p, g):
    """Validated parameters (OpenSSL checks the prime: slow, hence the cache)."""
    try:
        return DHParameterNumbers(p, g).parameters()
    except ValueError:
        raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, "invalid DH domain parameters") from None


def _domain(attrs):
    missing = [t for t in _DOMAIN if t not in attrs]
    if missing:
        raise CKRError(C.CKR_TEMPLATE_INCOMPLETE, "DH needs CKA_PRIME and CKA_BASE")
    p, g = from_big(attrs[C.CKA_PRIME]), from_big(attrs[C.CKA_BASE])
    if not 1 < g < p - 1:
        raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, "DH base out of range")
    return p, g


def _check_public(y, p, error):
    if not 1 < y < p - 1:
        raise CKRError(error, "DH public value out of range")


def _private_from_attrs(attrs):
    p, g = _domain(attrs)
    x = from_big(attrs[C.CKA_VALUE])
    numbers = _parameters(p, g).parameter_numbers()
    try:
        return DHPrivateNumbers(x, DHPublicNumbers(pow(g, x, p), numbers)).private_key()
    except ValueError:
        raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, "invalid DH private key") from None


def private_key(key):
    return remembered(key, "dh-private", _private_from_attrs)


def _complete(cls, attrs):
    p, g = _domain(attrs)
    _parameters(p, g)
    if cls == C.CKO_DOMAIN_PARAMETERS:
        if attrs.get(C.CKA_PRIME_BITS, p.bit_length()) != p.bit_length():
            raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, "CKA_PRIME_BITS does not match CKA_PRIME")
        attrs[C.CKA_PRIME_BITS] = p.bit_length()
        return
    value = from_big(attrs[C.CKA_VALUE])
    if cls == C.CKO_PUBLIC_KEY:
        _check_public(value, p, C.CKR_ATTRIBUTE_VALUE_INVALID)
        y = value
    else:
        if not 0 < value < p - 1:
            raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, "DH private value out of range")
        if attrs.get(C.CKA_VALUE_BITS, value.bit_length()) != value.bit_length():
            raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, "CKA_VALUE_BITS does not match CKA_VALUE")
        attrs[C.CKA_VALUE_BITS] = value.bit_length()
        y = pow(g, value, p)
    attrs[C.CKA_PUBLIC_KEY_INFO] = spki(p, g, y)


def _export(cls, attrs):
    return pkcs8.export(_private_from_attrs(attrs))


def _load(cls, blob):
    p, g, x = pkcs8.dh_numbers(cls, blob)  # an X9.42 key's q is not kept: CKK_DH has none
    return {C.CKA_PRIME: to_big(p), C.CKA_BASE: to_big(g), C.CKA_VALUE: to_big(x)}


register_key_type(finite_field_key_type(C.CKK_DH, _DOMAIN, _complete, _export, _load,
                                        private_extra=(C.CKA_VALUE_BITS,)))


class Dh:
    def generate(self, row, param, template):
        """CKM_DH_PKCS_PARAMETER_GEN: a safe prime of CKA_PRIME_BITS bits, generator 2."""
        bits = template.get(C.CKA_PRIME_BITS)
        if bits is None:
            raise CKRError(C.CKR_TEMPLATE_INCOMPLETE, "CKA_PRIME_BITS missing")
        if not MIN_BITS <= bits <= MAX_GENERATE_BITS:
            raise CKRError(C.CKR_KEY_SIZE_RANGE, f"DH primes of {MIN_BITS}..{MAX_GENERATE_BITS} bits, not {bits}")
        numbers = generate_parameters(GENERATOR, bits).parameter_numbers()
        return C.CKO_DOMAIN_PARAMETERS, C.CKK_DH, {C.CKA_PRIME: to_big(numbers.p), C.CKA_BASE: to_big(numbers.g)}

    def generate_pair(self, row, param, public_template, private_template):
        p, g = _domain(public_template)
        if not MIN_BITS <= p.bit_length() <= MAX_BITS:
            raise CKRError(C.CKR_KEY_SIZE_RANGE, f"DH primes of {MIN_BITS}..{MAX_BITS} bits")
        for attr_type in _DOMAIN:
            if private_template.get(attr_type, public_template[attr_type]) != public_template[attr_type]:
                raise CKRError(C.CKR_TEMPLATE_INCONSISTENT, "domain parameters differ between the templates")
        parameters = _parameters(p, g)
        value_bits = private_template.get(C.CKA_VALUE_BITS)
        if value_bits is None:
            numbers = parameters.generate_private_key().private_numbers()
            x, y = numbers.x, numbers.public_numbers.y
        else:
            # PKCS #3 §7.1: with a length l, 2^(l-1) <= x < 2^l.
            if not 2 <= value_bits < p.bit_length():
                raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, f"CKA_VALUE_BITS must be 2..{p.bit_length() - 1}")
            x = secrets.randbits(value_bits - 1) | 1 << (value_bits - 1)
            y = pow(g, x, p)
        domain = {t: public_template[t] for t in _DOMAIN}
        return C.CKK_DH, {C.CKA_VALUE: to_big(y)}, {**domain, C.CKA_VALUE: to_big(x)}

    def derive(self, row, base_key, param, template):
        if base_key.attrs[C.CKA_CLASS] != C.CKO_PRIVATE_KEY:
            raise CKRError(C.CKR_KEY_TYPE_INCONSISTENT, "DH derives from a private key")
        if not isinstance(param, bytes) or not param:
            raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "the other party's public value is missing")
        private = private_key(base_key)
        numbers = private.parameters().parameter_numbers()
        y = from_big(param)
        _check_public(y, numbers.p, C.CKR_MECHANISM_PARAM_INVALID)
        try:
            z = private.exchange(DHPublicNumbers(y, numbers).public_key())
        except ValueError:
            raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "the other party's public value is invalid") from None
        z = z.rjust((numbers.p.bit_length() + 7) // 8, b"\0")  # PKCS #3: as long as the prime
        ckk, length = derived.type_and_length(template, len(z), needs_type=True)
        return C.CKO_SECRET_KEY, ckk, {C.CKA_VALUE: derived.value(ckk, z[len(z) - length:])}


_DH = Dh()
register(
    Row(C.CKM_DH_PKCS_PARAMETER_GEN, _DH, C.CKF_GENERATE, (), MIN_BITS, MAX_GENERATE_BITS),
    Row(C.CKM_DH_PKCS_KEY_PAIR_GEN, _DH, C.CKF_GENERATE_KEY_PAIR, (), MIN_BITS, MAX_BITS),
    Row(C.CKM_DH_PKCS_DERIVE, _DH, C.CKF_DERIVE, (C.CKK_DH,), MIN_BITS, MAX_BITS),
)
