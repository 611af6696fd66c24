"""Fixtures and key importers shared by the mechanism tests (all through the real .so)."""

import contextlib

import pkcs11
import pytest
from cryptography.hazmat.primitives import serialization
from pkcs11 import Attribute, KeyType, ObjectClass

from conftest import USER_PIN


@pytest.fixture(scope="module")
def s(token):
    """One read/write, logged-in session for a whole test module (cheaper than one per test)."""
    with token.open(rw=True, user_pin=USER_PIN) as session:
        yield session


def b(value):
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


def rsa_private(session, n, e, d, p=None, q=None, dp=None, dq=None, qi=None, extra=None):
    template = {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: KeyType.RSA,
                Attribute.MODULUS: b(n), Attribute.PUBLIC_EXPONENT: b(e), Attribute.PRIVATE_EXPONENT: b(d),
                Attribute.SIGN: True, Attribute.DECRYPT: True, Attribute.UNWRAP: True, Attribute.TOKEN: False}
    for attr, value in ((Attribute.PRIME_1, p), (Attribute.PRIME_2, q), (Attribute.EXPONENT_1, dp),
                        (Attribute.EXPONENT_2, dq), (Attribute.COEFFICIENT, qi)):
        if value is not None:
            template[attr] = b(value)
    template.update(extra or {})
    return session.create_object(template)


def rsa_public(session, n, e, extra=None):
    template = {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.RSA,
                Attribute.MODULUS: b(n), Attribute.PUBLIC_EXPONENT: b(e), Attribute.VERIFY: True,
                Attribute.ENCRYPT: True, Attribute.WRAP: True, Attribute.TOKEN: False}
    template.update(extra or {})
    return session.create_object(template)


def rsa_from_crypto(session, private_key, extra=None):
    """Import a `cryptography` RSA private key -> (private object, public object)."""
    numbers = private_key.private_numbers()
    pub = numbers.public_numbers
    return (rsa_private(session, pub.n, pub.e, numbers.d, numbers.p, numbers.q, numbers.dmp1, numbers.dmq1,
                        numbers.iqmp, extra),
            rsa_public(session, pub.n, pub.e))


def ec_private(session, params, value, extra=None):
    template = {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: KeyType.EC,
                Attribute.EC_PARAMS: params, Attribute.VALUE: value, Attribute.SIGN: True,
                Attribute.DERIVE: True, Attribute.TOKEN: False}
    template.update(extra or {})
    return session.create_object(template)


def ec_public(session, params, point, extra=None):
    template = {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.EC,
                Attribute.EC_PARAMS: params, Attribute.EC_POINT: point, Attribute.VERIFY: True,
                Attribute.TOKEN: False}
    template.update(extra or {})
    return session.create_object(template)


def der_octet_string(data):
    n = len(data)
    if n < 0x80:
        return bytes([4, n]) + data
    size = (n.bit_length() + 7) // 8
    return bytes([4, 0x80 | size]) + n.to_bytes(size, "big") + data


def spki_of(public_key):
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@contextlib.contextmanager
def unmapped(rv):
    """python-pkcs11 has no class for some codes (CKR_KEY_FUNCTION_NOT_PERMITTED,
    CKR_CURVE_NOT_SUPPORTED): it raises the base class naming the code."""
    with pytest.raises(pkcs11.PKCS11Error) as info:
        yield info
    assert type(info.value) is pkcs11.PKCS11Error
    assert str(info.value) == f"Unmapped error code {hex(rv)}"


@contextlib.contextmanager
def raw_rv(rv):
    from .raw import CKR
    with pytest.raises(CKR) as info:
        yield info
    assert info.value.rv == rv, hex(info.value.rv)


def public_key_info(session, obj):
    """CKA_PUBLIC_KEY_INFO (python-pkcs11's Attribute enum lacks it)."""
    from .raw import attribute
    from ptkhsm import constants as C
    return attribute(session, obj.handle, C.CKA_PUBLIC_KEY_INFO)
