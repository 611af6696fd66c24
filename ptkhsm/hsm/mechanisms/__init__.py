"""The mechanism registry: one row per CKM, registered by the family modules.

A family module defines an implementation object whose methods are the
functions it supports (encrypt, decrypt, sign, verify, digest, generate,
generate_pair, wrap, unwrap, derive) and registers rows naming it. Anything a
family does not define is CKR_MECHANISM_INVALID, by default. Mechanisms get
keys (objects with `.attrs` and `.cache`) and decoded parameters; they never
see sessions or the store.

wrap/unwrap take and give the key as KeyType.export/load bytes, except for a
row whose info has "object" (the PTK-C CKM_WRAPKEY_* mechanisms): those wrap a
whole object, so wrap gets the attribute dict and unwrap gives one back.

The generic checks every operation needs (function allowed, key type, usage
attribute, key size, CKA_ALLOWED_MECHANISMS) are made once, in
`ptkhsm.hsm.operations`, from the row.
"""

import contextlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import constant_time, hashes

from ... import constants as C
from ...errors import CKRError

REGISTRY = {}


@dataclass(frozen=True)
class Row:
    ckm: int
    impl: object
    flags: int                     # CKF_ENCRYPT | CKF_SIGN | ... as C_GetMechanismInfo reports
    key_types: tuple = ()          # CKK accepted as the operation's key
    min_key: int = 0               # in the unit the spec gives for this mechanism (bits or bytes)
    max_key: int = 0
    info: dict = field(default_factory=dict)  # per-row data for the family (hash, sizes...)


@dataclass(frozen=True)
class KeyType:
    """What a key type adds to the object model; registered by the family that owns it.

    attrs: class -> the type-specific attributes an object of that class may carry.
    required: class -> attributes C_CreateObject must be given.
    complete(cls, attrs): checks the key material and fills derived attributes
    (CKA_VALUE_LEN, CKA_CHECK_VALUE, CKA_MODULUS_BITS, CKA_PUBLIC_KEY_INFO...).
    size(attrs): the key size in the unit the mechanisms of this type use.
    export(cls, attrs) -> bytes: the key as C_WrapKey wraps it (raw value, PKCS#8).
    load(cls, blob) -> attrs: the key material of an unwrapped key.
    """

    ckk: int
    attrs: dict
    required: dict
    complete: object
    size: object
    export: object
    load: object


def finite_field_key_type(ckk, domain, complete, export, load, private_extra=()):
    """The KeyType of a finite-field family (DSA, DH): public and private keys carry the
    domain parameters and CKA_VALUE, domain parameter objects the domain and
    CKA_PRIME_BITS; the size is the prime's."""
    return KeyType(
        ckk=ckk,
        attrs={C.CKO_PUBLIC_KEY: frozenset({*domain, C.CKA_VALUE}),
               C.CKO_PRIVATE_KEY: frozenset({*domain, C.CKA_VALUE, *private_extra}),
               C.CKO_DOMAIN_PARAMETERS: frozenset({*domain, C.CKA_PRIME_BITS})},
        required={C.CKO_PUBLIC_KEY: (*domain, C.CKA_VALUE),
                  C.CKO_PRIVATE_KEY: (*domain, C.CKA_VALUE),
                  C.CKO_DOMAIN_PARAMETERS: domain},
        complete=complete,
        size=lambda attrs: from_big(attrs[C.CKA_PRIME]).bit_length(),
        export=export,
        load=load,
    )


def from_big(raw):
    """A PKCS#11 big integer (unsigned, most significant byte first) -> int."""
    return int.from_bytes(raw, "big")


def to_big(value):
    """int -> a PKCS#11 big integer, without leading zero bytes (one zero byte for 0)."""
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


KEY_TYPES = {}


def register_key_type(key_type):
    KEY_TYPES[key_type.ckk] = key_type


def key_type(ckk):
    handler = KEY_TYPES.get(ckk)
    if handler is None:
        raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, f"key type {ckk:#x} not supported")
    return handler


def check_mac(computed, given):
    """C_Verify / C_VerifyFinal of a MAC: the length first, then a constant-time compare."""
    if len(given) != len(computed):
        raise CKRError(C.CKR_SIGNATURE_LEN_RANGE, f"MAC of {len(given)} bytes, {len(computed)} expected")
    if not constant_time.bytes_eq(computed, given):
        raise CKRError(C.CKR_SIGNATURE_INVALID, "MAC does not verify")


def remembered(key, name, make):
    """key.cache[name], made by make(key.attrs) on first use. The parsed form of a key
    (a cryptography key object, a keyed context) then costs nothing per operation;
    the cache goes when the key's attributes change."""
    value = key.cache.get(name)
    if value is None:
        value = key.cache[name] = make(key.attrs)
    return value


def register(*rows):
    for row in rows:
        if row.ckm in REGISTRY:
            raise ValueError(f"mechanism {C.CKM(row.ckm).name} registered twice")
        REGISTRY[row.ckm] = row


def lookup(ckm):
    row = REGISTRY.get(ckm)
    if row is None:
        raise CKRError(C.CKR_MECHANISM_INVALID, f"mechanism {ckm:#x} not supported")
    return row


def name(ckm):
    try:
        return C.CKM(ckm).name
    except ValueError:
        return hex(ckm)


@contextlib.contextmanager
def crypto_errors(bad_data=C.CKR_ENCRYPTED_DATA_INVALID):
    """The one place `cryptography`'s exceptions become CKR codes."""
    try:
        yield
    except InvalidSignature:
        raise CKRError(C.CKR_SIGNATURE_INVALID, "signature does not verify") from None
    except InvalidTag:
        raise CKRError(bad_data, "authentication tag does not match") from None
    except UnsupportedAlgorithm as exc:
        raise CKRError(C.CKR_MECHANISM_INVALID, str(exc)) from None


class Buffered:
    """A multi-part operation over a one-shot primitive: collects updates, runs at final.

    Used where the primitive needs the whole input (RSA, EdDSA, GCM decrypt);
    the spec allows it as long as the result is the same.
    """

    def __init__(self, oneshot):
        self._oneshot = oneshot
        self._parts = []

    def update(self, data):
        self._parts.append(bytes(data))
        return b""

    def final(self, *args):
        return self._oneshot(b"".join(self._parts), *args)

    def oneshot(self, data, *args):
        return self._oneshot(data, *args)


# C_WrapKey/C_UnwrapKey by a cipher mechanism report the same failures under the
# wrapping functions' own codes (PKCS#11 v3.0 §5.18).
_WRAP_ERRORS = {C.CKR_DATA_LEN_RANGE: C.CKR_KEY_SIZE_RANGE}
_UNWRAP_ERRORS = {C.CKR_ENCRYPTED_DATA_LEN_RANGE: C.CKR_WRAPPED_KEY_LEN_RANGE,
                  C.CKR_ENCRYPTED_DATA_INVALID: C.CKR_WRAPPED_KEY_INVALID}


@contextlib.contextmanager
def _renamed(table):
    try:
        yield
    except CKRError as exc:
        if exc.rv in table:
            raise CKRError(table[exc.rv], str(exc.args[0]) if exc.args else "") from None
        raise


class CipherWrap:
    """Wrapping as single-part encryption of the exported key (CBC-PAD, AES key wrap):
    for a family whose encrypt/decrypt already do the work."""

    def wrap(self, row, wrapping_key, param, blob):
        with _renamed(_WRAP_ERRORS):
            return self.encrypt(row, wrapping_key, param).oneshot(blob)

    def unwrap(self, row, key, param, wrapped):
        with _renamed(_UNWRAP_ERRORS):
            return self.decrypt(row, key, param).oneshot(wrapped)


class HashThenSign:
    """SHA*-RSA-PKCS(-PSS): hash incrementally, sign the digest at the end."""

    __slots__ = ("_hash", "_sign")

    def __init__(self, algorithm, sign):
        self._hash = hashes.Hash(algorithm)
        self._sign = sign

    def update(self, data):
        self._hash.update(data)

    def final(self, *signature):
        return self._sign(self._hash.finalize(), *signature)

    def oneshot(self, data, *signature):
        self._hash.update(data)
        return self.final(*signature)


def _load_families():
    from . import aes, digest, ec, hmac, rsa  # noqa: F401  (each registers its rows)
    from . import ecdh, eddsa  # noqa: F401
    from . import aes_wrap, cmac, des, wrapkey, wrapkey_aes  # noqa: F401
    from . import aes_mac, dh, dsa  # noqa: F401
    from . import derive  # noqa: F401  (last: its generic rows take every secret key type)


_load_families()
