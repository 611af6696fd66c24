"""RSA: key pairs, PKCS#1 v1.5, PSS, OAEP and raw (X.509) operations, and
wrapping secret keys with PKCS#1 v1.5 or OAEP.

Keys of 1024 to 4096 bits. PSS and the SHA*-RSA mechanisms take SHA-1, SHA-2
and SHA-3. OAEP takes SHA-1 and SHA-2 for the hash and for MGF1, in any
pairing: `cryptography` refuses OAEP with SHA-3, so we do too
(CKR_MECHANISM_PARAM_INVALID).
"""

import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from ... import constants as C
from ... import mechparams as P
from ...errors import CKRError
from . import (Buffered, CipherWrap, HashThenSign, KeyType, Row, crypto_errors, from_big, register,
               register_key_type, remembered, to_big)
from . import pkcs8
from .digest import HASHES, WEAK_HASHES

MIN_BITS, MAX_BITS = 1024, 4096
# Signatures made with older, weaker keys (512-bit certificates) still verify;
# nothing below MIN_BITS is generated, signs, encrypts or decrypts.
VERIFY_MIN_BITS = 512


def _strong(key):
    bits = from_big(key.attrs[C.CKA_MODULUS]).bit_length()
    if bits < MIN_BITS:
        raise CKRError(C.CKR_KEY_SIZE_RANGE, f"{bits}-bit RSA key: at least {MIN_BITS} bits except to verify")
MGF_HASH = {C.CKG_MGF1_SHA1: hashes.SHA1, C.CKG_MGF1_SHA224: hashes.SHA224,
            C.CKG_MGF1_SHA256: hashes.SHA256, C.CKG_MGF1_SHA384: hashes.SHA384,
            C.CKG_MGF1_SHA512: hashes.SHA512, C.CKG_MGF1_SHA3_224: hashes.SHA3_224,
            C.CKG_MGF1_SHA3_256: hashes.SHA3_256, C.CKG_MGF1_SHA3_384: hashes.SHA3_384,
            C.CKG_MGF1_SHA3_512: hashes.SHA3_512}
_SHA3 = (hashes.SHA3_224, hashes.SHA3_256, hashes.SHA3_384, hashes.SHA3_512)

_PRIVATE_PARTS = (C.CKA_PRIVATE_EXPONENT, C.CKA_PRIME_1, C.CKA_PRIME_2, C.CKA_EXPONENT_1,
                  C.CKA_EXPONENT_2, C.CKA_COEFFICIENT)


# -- key objects ----------------------------------------------------------------
def _public_from_attrs(attrs):
    with _invalid("RSA public key"):
        return rsa.RSAPublicNumbers(from_big(attrs[C.CKA_PUBLIC_EXPONENT]), from_big(attrs[C.CKA_MODULUS])).public_key()


def public_key(key):
    return remembered(key, "rsa-public", _public_from_attrs)


def private_key(key):
    return remembered(key, "rsa-private", _private_from_attrs)


def _private_from_attrs(attrs):
    n, e, d = (from_big(attrs[t]) for t in (C.CKA_MODULUS, C.CKA_PUBLIC_EXPONENT, C.CKA_PRIVATE_EXPONENT))
    with _invalid("RSA private key"):
        if all(t in attrs for t in _PRIVATE_PARTS):
            p, q, dp, dq, qi = (from_big(attrs[t]) for t in _PRIVATE_PARTS[1:])
        else:
            p, q = rsa.rsa_recover_prime_factors(n, e, d)
            dp, dq, qi = rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q)
        return rsa.RSAPrivateNumbers(p, q, d, dp, dq, qi, rsa.RSAPublicNumbers(e, n)).private_key()


class _invalid:
    """Key material cryptography refuses is CKR_ATTRIBUTE_VALUE_INVALID."""

    def __init__(self, what):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is not None and issubclass(kind, (ValueError, TypeError)):
            raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, f"invalid {self.what}") from None


def _spki(public):
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _private_attrs(private):
    numbers = private.private_numbers()
    return {C.CKA_MODULUS: to_big(numbers.public_numbers.n),
            C.CKA_PUBLIC_EXPONENT: to_big(numbers.public_numbers.e),
            C.CKA_PRIVATE_EXPONENT: to_big(numbers.d), C.CKA_PRIME_1: to_big(numbers.p),
            C.CKA_PRIME_2: to_big(numbers.q), C.CKA_EXPONENT_1: to_big(numbers.dmp1),
            C.CKA_EXPONENT_2: to_big(numbers.dmq1), C.CKA_COEFFICIENT: to_big(numbers.iqmp)}


def _complete(cls, attrs):
    if cls == C.CKO_PUBLIC_KEY:
        public = rsa.RSAPublicNumbers(from_big(attrs[C.CKA_PUBLIC_EXPONENT]), from_big(attrs[C.CKA_MODULUS]))
        with _invalid("RSA public key"):
            public = public.public_key()
        attrs[C.CKA_MODULUS_BITS] = public.key_size
    else:
        if C.CKA_PUBLIC_EXPONENT not in attrs:
            raise CKRError(C.CKR_TEMPLATE_INCOMPLETE, "CKA_PUBLIC_EXPONENT missing")
        private = _private_from_attrs(attrs)
        attrs.update(_private_attrs(private))
        public = private.public_key()
    attrs[C.CKA_PUBLIC_KEY_INFO] = _spki(public)


def _load(cls, blob):
    return _private_attrs(pkcs8.load(cls, blob, rsa.RSAPrivateKey, "RSA"))


def _export(cls, attrs):
    return pkcs8.export(_private_from_attrs(attrs))


register_key_type(KeyType(
    ckk=C.CKK_RSA,
    attrs={C.CKO_PUBLIC_KEY: frozenset({C.CKA_MODULUS, C.CKA_MODULUS_BITS, C.CKA_PUBLIC_EXPONENT}),
           C.CKO_PRIVATE_KEY: frozenset({C.CKA_MODULUS, C.CKA_PUBLIC_EXPONENT, *_PRIVATE_PARTS})},
    required={C.CKO_PUBLIC_KEY: (C.CKA_MODULUS, C.CKA_PUBLIC_EXPONENT),
              C.CKO_PRIVATE_KEY: (C.CKA_MODULUS, C.CKA_PRIVATE_EXPONENT)},
    complete=_complete,
    size=lambda attrs: from_big(attrs[C.CKA_MODULUS]).bit_length(),
    export=_export,
    load=_load,
))


# -- raw RSA ----------------------------------------------------------------------
def _raw_public(public, data):
    numbers = public.public_numbers()
    k = (numbers.n.bit_length() + 7) // 8
    m = from_big(data)
    if len(data) > k or m >= numbers.n:
        raise CKRError(C.CKR_DATA_LEN_RANGE, "input not smaller than the modulus")
    return pow(m, numbers.e, numbers.n).to_bytes(k, "big")


def _raw_private(private, data, error=C.CKR_DATA_LEN_RANGE):
    """m^d mod n for the raw mechanisms, which `cryptography` does not expose.

    Blinded (c * r^e) so the time taken does not follow the input; the CRT
    exponentiations use Python integers.
    """
    numbers = private.private_numbers()
    n, e = numbers.public_numbers.n, numbers.public_numbers.e
    k = (n.bit_length() + 7) // 8
    c = from_big(data)
    if len(data) > k or c >= n:
        raise CKRError(error, "input not smaller than the modulus")
    while True:
        r = from_big(os.urandom(k)) % n
        if r > 1:
            try:
                r_inv = pow(r, -1, n)
                break
            except ValueError:
                continue
    blinded = c * pow(r, e, n) % n
    m1 = pow(blinded, numbers.dmp1, numbers.p)
    m2 = pow(blinded, numbers.dmq1, numbers.q)
    h = numbers.iqmp * (m1 - m2) % numbers.p
    return ((m2 + h * numbers.q) * r_inv % n).to_bytes(k, "big")


def _modulus_bytes(key):
    return (public_key(key).key_size + 7) // 8 if key.attrs[C.CKA_CLASS] == C.CKO_PUBLIC_KEY \
        else (private_key(key).key_size + 7) // 8


# DER DigestInfo prefixes (RFC 8017 §9.2 note 1): signing one of these takes the
# fast path through OpenSSL instead of the raw exponentiation.
DIGEST_INFO = {bytes.fromhex(prefix): algorithm for prefix, algorithm in (
    ("3021300906052b0e03021a05000414", hashes.SHA1),
    ("302d300d06096086480165030402040500041c", hashes.SHA224),
    ("3031300d060960864801650304020105000420", hashes.SHA256),
    ("3041300d060960864801650304020205000430", hashes.SHA384),
    ("3051300d060960864801650304020305000440", hashes.SHA512))}


def _pkcs1_sign_raw(private, data):
    for prefix, algorithm in DIGEST_INFO.items():
        if data.startswith(prefix) and len(data) == len(prefix) + algorithm.digest_size:
            return private.sign(data[len(prefix):], padding.PKCS1v15(), utils.Prehashed(algorithm()))
    k = (private.key_size + 7) // 8
    if len(data) > k - 11:
        raise CKRError(C.CKR_DATA_LEN_RANGE, f"at most {k - 11} bytes for PKCS#1 v1.5")
    return _raw_private(private, b"\0\1" + b"\xff" * (k - 3 - len(data)) + b"\0" + data)


def _pkcs1_verify_raw(public, data, signature):
    k = (public.key_size + 7) // 8
    if len(signature) != k:
        raise CKRError(C.CKR_SIGNATURE_LEN_RANGE, f"signature of {len(signature)} bytes, {k} expected")
    try:
        em = _raw_public(public, signature)
    except CKRError:
        raise CKRError(C.CKR_SIGNATURE_INVALID, "signature not smaller than the modulus") from None
    expected = b"\0\1" + b"\xff" * (k - 3 - len(data)) + b"\0" + data
    if len(data) > k - 11 or em != expected:
        raise CKRError(C.CKR_SIGNATURE_INVALID, "signature does not verify")


# -- operations -------------------------------------------------------------------
def _check_sig_len(public, signature):
    k = (public.key_size + 7) // 8
    if len(signature) != k:
        raise CKRError(C.CKR_SIGNATURE_LEN_RANGE, f"signature of {len(signature)} bytes, {k} expected")


def _pss(param, key_bits):
    if not isinstance(param, P.PssParams) or param.hash_alg not in HASHES or param.mgf not in MGF_HASH:
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "PSS needs CK_RSA_PKCS_PSS_PARAMS")
    # RFC 8017 §9.1.1: emLen >= hLen + sLen + 2, emLen = ceil((modBits - 1) / 8)
    longest = (key_bits - 1 + 7) // 8 - HASHES[param.hash_alg].digest_size - 2
    if not 0 <= param.salt_len <= longest:
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, f"PSS salt of {param.salt_len} bytes, at most {longest}")
    return padding.PSS(mgf=padding.MGF1(MGF_HASH[param.mgf]()), salt_length=param.salt_len)


def _oaep(param):
    if not isinstance(param, P.OaepParams) or param.hash_alg not in HASHES or param.mgf not in MGF_HASH:
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "OAEP needs CK_RSA_PKCS_OAEP_PARAMS")
    if HASHES[param.hash_alg] in _SHA3 or MGF_HASH[param.mgf] in _SHA3:
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "OAEP with SHA-3 is not supported")
    if param.source not in (0, C.CKZ_DATA_SPECIFIED):
        raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "OAEP source must be CKZ_DATA_SPECIFIED")
    return padding.OAEP(mgf=padding.MGF1(MGF_HASH[param.mgf]()), algorithm=HASHES[param.hash_alg](),
                        label=param.source_data or None)


class Rsa(CipherWrap):
    """Wrapping (CipherWrap): the key value is the message of PKCS#1 v1.5 or OAEP encryption."""

    def generate_pair(self, row, param, public_template, private_template):
        bits = public_template.get(C.CKA_MODULUS_BITS)
        if bits is None:
            raise CKRError(C.CKR_TEMPLATE_INCOMPLETE, "CKA_MODULUS_BITS missing")
        if not MIN_BITS <= bits <= MAX_BITS:
            raise CKRError(C.CKR_KEY_SIZE_RANGE, f"RSA keys of {MIN_BITS}..{MAX_BITS} bits, not {bits}")
        exponent = from_big(public_template.get(C.CKA_PUBLIC_EXPONENT, b"\1\0\1"))
        try:
            private = rsa.generate_private_key(exponent, bits)
        except ValueError:
            raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, "public exponent must be 3 or 65537") from None
        attrs = _private_attrs(private)
        public_attrs = {C.CKA_MODULUS: attrs[C.CKA_MODULUS],
                        C.CKA_PUBLIC_EXPONENT: attrs[C.CKA_PUBLIC_EXPONENT]}
        return C.CKK_RSA, public_attrs, attrs

    def encrypt(self, row, key, param):
        _strong(key)
        public = public_key(key)
        kind = row.info["kind"]
        if kind == "raw":
            return Buffered(lambda data: _raw_public(public, data.rjust(_modulus_bytes(key), b"\0")))
        pad = _oaep(param) if kind == "oaep" else padding.PKCS1v15()

        def run(data):
            try:
                return public.encrypt(data, pad)
            except ValueError:
                raise CKRError(C.CKR_DATA_LEN_RANGE, "input too long for the key") from None
        return Buffered(run)

    def decrypt(self, row, key, param):
        _strong(key)
        private = private_key(key)
        kind = row.info["kind"]
        k = (private.key_size + 7) // 8
        if kind == "raw":
            return Buffered(lambda data: _raw_private(private, data, C.CKR_ENCRYPTED_DATA_LEN_RANGE))
        pad = _oaep(param) if kind == "oaep" else padding.PKCS1v15()

        def run(data):
            if len(data) != k:
                raise CKRError(C.CKR_ENCRYPTED_DATA_LEN_RANGE, f"{len(data)} bytes, {k} expected")
            try:
                return private.decrypt(data, pad)
            except ValueError:
                raise CKRError(C.CKR_ENCRYPTED_DATA_INVALID, "decryption failed") from None
        return Buffered(run)

    def sign(self, row, key, param):
        _strong(key)
        private = private_key(key)
        kind, digest = row.info["kind"], row.info.get("hash")
        if kind == "raw":
            return Buffered(lambda data: _raw_private(private, data.rjust(_modulus_bytes(key), b"\0")))
        if kind == "pkcs":
            if digest is None:
                return Buffered(lambda data: _pkcs1_sign_raw(private, data))
            return HashThenSign(digest(), lambda d: private.sign(d, padding.PKCS1v15(),
                                                                 utils.Prehashed(digest())))
        pss = _pss(param, private.key_size)
        if digest is None:
            algorithm = HASHES[param.hash_alg]()

            def run(data):
                if len(data) != algorithm.digest_size:
                    raise CKRError(C.CKR_DATA_LEN_RANGE, "PSS input must be the digest")
                with crypto_errors():
                    return private.sign(data, pss, utils.Prehashed(algorithm))
            return Buffered(run)
        if param.hash_alg != row.info["hash_ckm"]:
            raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "PSS hash does not match the mechanism")
        return HashThenSign(digest(), lambda d: private.sign(d, pss, utils.Prehashed(digest())))

    def verify(self, row, key, param):
        public = public_key(key)
        kind, digest = row.info["kind"], row.info.get("hash")
        if kind == "raw":
            def run_raw(data, signature):
                _check_sig_len(public, signature)
                if _raw_public(public, signature) != data.rjust(len(signature), b"\0"):
                    raise CKRError(C.CKR_SIGNATURE_INVALID, "signature does not verify")
            return Buffered(run_raw)
        if kind == "pkcs" and digest is None:
            return Buffered(lambda data, signature: _pkcs1_verify_raw(public, data, signature))
        pad = padding.PKCS1v15() if kind == "pkcs" else _pss(param, public.key_size)
        if kind == "pss" and digest is not None and param.hash_alg != row.info["hash_ckm"]:
            raise CKRError(C.CKR_MECHANISM_PARAM_INVALID, "PSS hash does not match the mechanism")
        algorithm = digest or HASHES[param.hash_alg]

        def check(hashed, signature):
            _check_sig_len(public, signature)
            if len(hashed) != algorithm.digest_size:
                raise CKRError(C.CKR_DATA_LEN_RANGE, "input must be the digest")
            with crypto_errors():
                public.verify(signature, hashed, pad, utils.Prehashed(algorithm()))
        if digest is None:
            return Buffered(check)
        return HashThenSign(digest(), check)


_RSA = Rsa()
_KEYS = (C.CKK_RSA,)
_ALL = C.CKF_ENCRYPT | C.CKF_DECRYPT | C.CKF_SIGN | C.CKF_VERIFY
_WRAP = C.CKF_WRAP | C.CKF_UNWRAP
register(
    Row(C.CKM_RSA_PKCS_KEY_PAIR_GEN, _RSA, C.CKF_GENERATE_KEY_PAIR, (), MIN_BITS, MAX_BITS),
    # PKCS#11 §2.1.6/2.1.8: these "wrap and unwrap any secret key of appropriate length".
    Row(C.CKM_RSA_PKCS, _RSA, _ALL | _WRAP, _KEYS, VERIFY_MIN_BITS, MAX_BITS,
        info={"kind": "pkcs", "wraps": (C.CKO_SECRET_KEY,)}),
    Row(C.CKM_RSA_X_509, _RSA, _ALL, _KEYS, VERIFY_MIN_BITS, MAX_BITS, info={"kind": "raw"}),
    Row(C.CKM_RSA_PKCS_OAEP, _RSA, C.CKF_ENCRYPT | C.CKF_DECRYPT | _WRAP, _KEYS, MIN_BITS, MAX_BITS,
        info={"kind": "oaep", "wraps": (C.CKO_SECRET_KEY,)}),
    Row(C.CKM_RSA_PKCS_PSS, _RSA, C.CKF_SIGN | C.CKF_VERIFY, _KEYS, VERIFY_MIN_BITS, MAX_BITS,
        info={"kind": "pss"}),
    # PKCS#1 v1.5 with MD5, as PTK-C offers it (a weak mechanism, docs/decisions.md).
    Row(C.CKM_MD5_RSA_PKCS, _RSA, C.CKF_SIGN | C.CKF_VERIFY, _KEYS, VERIFY_MIN_BITS, MAX_BITS,
        info={"kind": "pkcs", "hash": WEAK_HASHES[C.CKM_MD5], "weak": True}),
)
for _ckm, _pkcs, _pss_ckm in (
        (C.CKM_SHA_1, C.CKM_SHA1_RSA_PKCS, C.CKM_SHA1_RSA_PKCS_PSS),
        (C.CKM_SHA224, C.CKM_SHA224_RSA_PKCS, C.CKM_SHA224_RSA_PKCS_PSS),
        (C.CKM_SHA256, C.CKM_SHA256_RSA_PKCS, C.CKM_SHA256_RSA_PKCS_PSS),
        (C.CKM_SHA384, C.CKM_SHA384_RSA_PKCS, C.CKM_SHA384_RSA_PKCS_PSS),
        (C.CKM_SHA512, C.CKM_SHA512_RSA_PKCS, C.CKM_SHA512_RSA_PKCS_PSS),
        (C.CKM_SHA3_224, C.CKM_SHA3_224_RSA_PKCS, C.CKM_SHA3_224_RSA_PKCS_PSS),
        (C.CKM_SHA3_256, C.CKM_SHA3_256_RSA_PKCS, C.CKM_SHA3_256_RSA_PKCS_PSS),
        (C.CKM_SHA3_384, C.CKM_SHA3_384_RSA_PKCS, C.CKM_SHA3_384_RSA_PKCS_PSS),
        (C.CKM_SHA3_512, C.CKM_SHA3_512_RSA_PKCS, C.CKM_SHA3_512_RSA_PKCS_PSS)):
    register(
        Row(_pkcs, _RSA, C.CKF_SIGN | C.CKF_VERIFY, _KEYS, VERIFY_MIN_BITS, MAX_BITS,
            info={"kind": "pkcs", "hash": HASHES[_ckm]}),
        Row(_pss_ckm, _RSA, C.CKF_SIGN | C.CKF_VERIFY, _KEYS, VERIFY_MIN_BITS, MAX_BITS,
            info={"kind": "pss", "hash": HASHES[_ckm], "hash_ckm": _ckm}),
    )
