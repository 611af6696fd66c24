"""C_WrapKey / C_UnwrapKey with AES key wrap (RFC 3394), AES key wrap with padding
(RFC 5649, as CKM_AES_KEY_WRAP_KWP and CKM_AES_KEY_WRAP_PAD), AES-CBC-PAD and
DES3-CBC-PAD, through the real .so; and the rules every wrap obeys (CKA_WRAP/UNWRAP,
CKA_EXTRACTABLE, CKA_WRAP_WITH_TRUSTED/CKA_TRUSTED, CKA_WRAP_TEMPLATE,
CKA_UNWRAP_TEMPLATE).

Vectors: RFC 3394 §4, RFC 5649 §6, NIST SP 800-38A F.2.5 (CBC-AES256), NIST CAVP
TCBCMMT3 (TDES CBC) — a key whose value is the published plaintext wraps to the
published ciphertext (followed, for the -PAD mechanisms, by the padding block).
"""

import pkcs11
import pytest
from cryptography.hazmat.primitives import keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from conftest import SO_PIN, USER_PIN, init_token
from ptkhsm import constants as C

from . import raw
from .conftest import raw_rv, rsa_from_crypto
from .symkeys import create, secret, unwrap
from .test_symmetric import RFC3394, RFC5649, _tdes_records

READABLE = {Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True}
TRUSTED_LABEL = "wrap-test trusted kek"
SLOT1_LABEL = "wrap-test slot 1"


@pytest.fixture(scope="module")
def trusted_session(lib):
    """A user session on slot 1 holding a public token AES key with CKA_TRUSTED, made by the SO
    first (the SO and the user cannot be logged in at once). Slot 1: slot 0 is the external
    token, whose objects cannot be trusted (docs/exttoken.md)."""
    init_token(slot=1, label=SLOT1_LABEL)
    token = lib.get_token(token_label=SLOT1_LABEL)
    with token.open(rw=True, so_pin=SO_PIN) as so:
        so.create_object({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
                          Attribute.VALUE: bytes(range(32)), Attribute.TOKEN: True, Attribute.PRIVATE: False,
                          Attribute.TRUSTED: True, Attribute.WRAP: True, Attribute.LABEL: TRUSTED_LABEL})
    with token.open(rw=True, user_pin=USER_PIN) as session:
        yield session
        session.get_key(label=TRUSTED_LABEL).destroy()


def _kek(session, value, **attrs):
    return secret(session, KeyType.AES, value, WRAP=True, UNWRAP=True, **attrs)


# -- known answers ----------------------------------------------------------------------
@pytest.mark.parametrize("kek, data, wrapped", RFC3394)
def test_aes_kw_wrap_rfc3394(s, kek, data, wrapped):
    kek = _kek(s, bytes.fromhex(kek))
    subject = secret(s, KeyType.AES, bytes.fromhex(data))
    assert kek.wrap_key(subject, mechanism=Mechanism.AES_KEY_WRAP) == bytes.fromhex(wrapped)
    key = kek.unwrap_key(ObjectClass.SECRET_KEY, KeyType.AES, bytes.fromhex(wrapped),
                         mechanism=Mechanism.AES_KEY_WRAP, template=READABLE)
    assert key[Attribute.VALUE] == bytes.fromhex(data)
    assert key[Attribute.CHECK_VALUE] == subject[Attribute.CHECK_VALUE]
    assert not key[Attribute.LOCAL] and not key[Attribute.ALWAYS_SENSITIVE]


@pytest.mark.parametrize("mechanism", [Mechanism.AES_KEY_WRAP_KWP, Mechanism.AES_KEY_WRAP_PAD])
@pytest.mark.parametrize("kek, data, wrapped", RFC5649)
def test_aes_kwp_wrap_rfc5649(s, mechanism, kek, data, wrapped):
    """RFC 5649's 20- and 7-byte keys, as generic secrets."""
    kek = _kek(s, bytes.fromhex(kek))
    subject = secret(s, KeyType.GENERIC_SECRET, bytes.fromhex(data))
    assert kek.wrap_key(subject, mechanism=mechanism) == bytes.fromhex(wrapped)
    key = kek.unwrap_key(ObjectClass.SECRET_KEY, KeyType.GENERIC_SECRET, bytes.fromhex(wrapped),
                         mechanism=mechanism, template=READABLE)
    assert key[Attribute.VALUE] == bytes.fromhex(data) and key[Attribute.VALUE_LEN] == len(data) // 2


def test_aes_cbc_pad_wrap_sp800_38a(s):
    """SP 800-38A F.2.5 (CBC-AES256.Encrypt), first two blocks as a 32-byte AES key."""
    kek = _kek(s, bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"))
    iv = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    value = bytes.fromhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
    expected = bytes.fromhex("f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d")
    subject = secret(s, KeyType.AES, value)
    wrapped = kek.wrap_key(subject, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=iv)
    assert len(wrapped) == 48 and wrapped[:32] == expected
    key = kek.unwrap_key(ObjectClass.SECRET_KEY, KeyType.AES, wrapped, mechanism=Mechanism.AES_CBC_PAD,
                         mechanism_param=iv, template=READABLE)
    assert key[Attribute.VALUE] == value


def test_des3_cbc_pad_wrap_cavp(s):
    """TCBCMMT3: the 16- and 24-byte plaintexts as DES2 and DES3 keys, wrapped under the
    vector's three-key wrapping key."""
    records = [r for r in _tdes_records("CBC", "TCBCMMT3.rsp") if r[0] == "ENCRYPT" and len(r[4]) in (16, 24)]
    assert len(records) == 2
    for _, key_type, value, iv, plain, cipher in records:
        kek = secret(s, key_type, value, WRAP=True, UNWRAP=True)
        subject_type = KeyType.DES2 if len(plain) == 16 else KeyType.DES3
        subject = secret(s, subject_type, plain)
        wrapped = kek.wrap_key(subject, mechanism=Mechanism.DES3_CBC_PAD, mechanism_param=iv)
        assert len(wrapped) == len(plain) + 8 and wrapped[:len(plain)] == cipher
        key = kek.unwrap_key(ObjectClass.SECRET_KEY, subject_type, wrapped, mechanism=Mechanism.DES3_CBC_PAD,
                             mechanism_param=iv, template=READABLE)
        assert key[Attribute.VALUE] == plain


def test_aes_kw_zero_pads_odd_keys(s):
    """PKCS#11: RFC 3394 wraps a key of any length, zero padded to 8 bytes; CKA_VALUE_LEN in the
    unwrap template cuts it back (and must not cut non-zero bytes)."""
    kek_value, value = bytes(range(16)), bytes(range(100, 120))
    kek = _kek(s, kek_value)
    wrapped = kek.wrap_key(secret(s, KeyType.GENERIC_SECRET, value), mechanism=Mechanism.AES_KEY_WRAP)
    assert wrapped == keywrap.aes_key_wrap(kek_value, value + b"\0" * 4)
    key = kek.unwrap_key(ObjectClass.SECRET_KEY, KeyType.GENERIC_SECRET, wrapped, mechanism=Mechanism.AES_KEY_WRAP,
                         template={**READABLE, Attribute.VALUE_LEN: 20})
    assert key[Attribute.VALUE] == value
    with pytest.raises(pkcs11.TemplateInconsistent):
        kek.unwrap_key(ObjectClass.SECRET_KEY, KeyType.GENERIC_SECRET, wrapped, mechanism=Mechanism.AES_KEY_WRAP,
                       template={Attribute.VALUE_LEN: 19})


@pytest.mark.parametrize("mechanism, param", [(Mechanism.AES_KEY_WRAP_KWP, None),
                                              (Mechanism.AES_CBC_PAD, bytes(16))])
def test_wrap_private_key(s, mechanism, param):
    """An RSA private key wraps as PKCS#8 (checked by unwrapping outside the module) and
    unwraps back to the same key."""
    crypto_key = rsa.generate_private_key(65537, 2048)
    private, _ = rsa_from_crypto(s, crypto_key, extra={Attribute.EXTRACTABLE: True})
    kek_value = bytes(range(32))
    kek = _kek(s, kek_value)
    wrapped = kek.wrap_key(private, mechanism=mechanism, mechanism_param=param)
    if mechanism == Mechanism.AES_KEY_WRAP_KWP:
        der = keywrap.aes_key_unwrap_with_padding(kek_value, wrapped)
    else:
        decryptor = Cipher(algorithms.AES(kek_value), modes.CBC(param)).decryptor()
        der = decryptor.update(wrapped) + decryptor.finalize()
        der = der[:-der[-1]]
    outside = serialization.load_der_private_key(der, None)
    assert outside.private_numbers() == crypto_key.private_numbers()
    # (python-pkcs11's unwrap_key would add CKA_ENCRYPT & co., which a private key lacks)
    key = unwrap(s, mechanism, param, kek.handle, wrapped,
                 {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: KeyType.RSA})
    assert raw.attribute(s, key, C.CKA_MODULUS) == private[Attribute.MODULUS]


# -- bad parameters and tampering -----------------------------------------------------------
def test_tampered_wrapped_keys(s):
    kek = _kek(s, bytes(range(32)))
    subject = secret(s, KeyType.AES, bytes(range(32)))
    for mechanism, param in ((Mechanism.AES_KEY_WRAP, None), (Mechanism.AES_KEY_WRAP_KWP, None),
                             (Mechanism.AES_KEY_WRAP_PAD, None)):
        wrapped = kek.wrap_key(subject, mechanism=mechanism, mechanism_param=param)
        for i in range(0, len(wrapped), 5):
            tampered = bytearray(wrapped)
            tampered[i] ^= 1 << (i % 8)
            with pytest.raises(pkcs11.WrappedKeyInvalid):
                kek.unwrap_key(ObjectClass.SECRET_KEY, KeyType.AES, bytes(tampered), mechanism=mechanism)
        with pytest.raises(pkcs11.WrappedKeyLenRange):
            kek.unwrap_key(ObjectClass.SECRET_KEY, KeyType.AES, wrapped[:-3], mechanism=mechanism)
    # CBC-PAD: a change in the next-to-last block turns the padding 0x10.. into 0x11
    iv = bytes(16)
    wrapped = bytearray(kek.wrap_key(subject, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=iv))
    wrapped[31] ^= 1
    with pytest.raises(pkcs11.WrappedKeyInvalid):
        kek.unwrap_key(ObjectClass.SECRET_KEY, KeyType.AES, bytes(wrapped), mechanism=Mechanism.AES_CBC_PAD,
                       mechanism_param=iv)


def test_wrap_bad_parameters(s):
    kek = _kek(s, bytes(range(16)))
    subject = secret(s, KeyType.AES, bytes(16))
    with pytest.raises(pkcs11.MechanismParamInvalid):
        kek.wrap_key(subject, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=bytes(8))
    with pytest.raises(pkcs11.MechanismParamInvalid):
        kek.wrap_key(subject, mechanism=Mechanism.AES_KEY_WRAP, mechanism_param=bytes(4))
    with pytest.raises(pkcs11.MechanismInvalid):  # AES-CBC (no padding) is not a wrapping mechanism here
        kek.wrap_key(subject, mechanism=Mechanism.AES_CBC, mechanism_param=bytes(16))
    des_kek = secret(s, KeyType.DES3, bytes(range(24)), WRAP=True, UNWRAP=True)
    with pytest.raises(pkcs11.WrappingKeyTypeInconsistent):
        des_kek.wrap_key(subject, mechanism=Mechanism.AES_KEY_WRAP)
    with pytest.raises(pkcs11.UnwrappingKeyTypeInconsistent):
        des_kek.unwrap_key(ObjectClass.SECRET_KEY, KeyType.AES, bytes(24), mechanism=Mechanism.AES_KEY_WRAP)
    with pytest.raises(pkcs11.WrappingKeyTypeInconsistent):
        kek.wrap_key(subject, mechanism=Mechanism.DES3_CBC_PAD, mechanism_param=bytes(8))
    wrapped = kek.wrap_key(subject, mechanism=Mechanism.AES_KEY_WRAP)
    with raw_rv(C.CKR_TEMPLATE_INCOMPLETE):  # no CKA_KEY_TYPE: the raw value says nothing of it
        unwrap(s, C.CKM_AES_KEY_WRAP, None, kek.handle, wrapped, {Attribute.CLASS: ObjectClass.SECRET_KEY})
    with pytest.raises(pkcs11.WrappedKeyInvalid):  # 16 bytes are no DES3 key
        kek.unwrap_key(ObjectClass.SECRET_KEY, KeyType.DES3, wrapped, mechanism=Mechanism.AES_KEY_WRAP)


# -- the wrapping rules ---------------------------------------------------------------------
def test_usage_attributes(s):
    """CKA_WRAP on the wrapping key, CKA_UNWRAP on the unwrapping key."""
    subject = secret(s, KeyType.AES, bytes(16))
    no_wrap = secret(s, KeyType.AES, bytes(range(16)), WRAP=False, UNWRAP=True)
    with raw_rv(C.CKR_KEY_FUNCTION_NOT_PERMITTED):
        raw.wrap(s, C.CKM_AES_KEY_WRAP, None, no_wrap.handle, subject.handle)
    wrapped = _kek(s, bytes(range(16))).wrap_key(subject, mechanism=Mechanism.AES_KEY_WRAP)
    no_unwrap = secret(s, KeyType.AES, bytes(range(16)), WRAP=True, UNWRAP=False)
    with raw_rv(C.CKR_KEY_FUNCTION_NOT_PERMITTED):
        unwrap(s, C.CKM_AES_KEY_WRAP, None, no_unwrap.handle, wrapped,
               {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES})
    assert no_wrap.unwrap_key(ObjectClass.SECRET_KEY, KeyType.AES, wrapped, mechanism=Mechanism.AES_KEY_WRAP)


def test_extractable(s):
    kek = _kek(s, bytes(range(16)))
    locked = secret(s, KeyType.AES, bytes(16), EXTRACTABLE=False, SENSITIVE=True)
    with pytest.raises(pkcs11.KeyUnextractable):
        kek.wrap_key(locked, mechanism=Mechanism.AES_KEY_WRAP)
    # sensitive but extractable: wrapping is how such a key leaves the token
    sensitive = secret(s, KeyType.AES, bytes(16), SENSITIVE=True)
    assert len(kek.wrap_key(sensitive, mechanism=Mechanism.AES_KEY_WRAP)) == 24


def test_wrap_with_trusted(trusted_session):
    """A CKA_WRAP_WITH_TRUSTED key wraps only under a CKA_TRUSTED key (which only the SO sets)."""
    s = trusted_session
    subject = secret(s, KeyType.AES, bytes(16), WRAP_WITH_TRUSTED=True)
    with pytest.raises(pkcs11.KeyNotWrappable):
        _kek(s, bytes(range(32))).wrap_key(subject, mechanism=Mechanism.AES_KEY_WRAP)
    trusted = s.get_key(label=TRUSTED_LABEL)
    assert trusted[Attribute.TRUSTED]
    assert trusted.wrap_key(subject, mechanism=Mechanism.AES_KEY_WRAP) == keywrap.aes_key_wrap(
        bytes(range(32)), bytes(16))
    with pytest.raises(pkcs11.AttributeReadOnly):  # the user cannot make a key trusted
        _kek(s, bytes(range(32)), TRUSTED=True)


def test_wrap_template(s):
    """CKA_WRAP_TEMPLATE: only keys matching it wrap under that key."""
    handle = create(s, {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
                        Attribute.VALUE: bytes(range(16)), Attribute.WRAP: True, Attribute.TOKEN: False,
                        Attribute.WRAP_TEMPLATE: {Attribute.KEY_TYPE: KeyType.AES, Attribute.EXTRACTABLE: True}})
    generic = secret(s, KeyType.GENERIC_SECRET, bytes(16))
    with raw_rv(C.CKR_KEY_NOT_WRAPPABLE):
        raw.wrap(s, C.CKM_AES_KEY_WRAP, None, handle, generic.handle)
    aes = secret(s, KeyType.AES, bytes(16))
    assert raw.wrap(s, C.CKM_AES_KEY_WRAP, None, handle, aes.handle) == keywrap.aes_key_wrap(
        bytes(range(16)), bytes(16))


def test_unwrap_template(s):
    """CKA_UNWRAP_TEMPLATE: its attributes are given to every key unwrapped with that key; a
    caller's template that contradicts it is inconsistent."""
    value = bytes(range(16))
    handle = create(s, {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
                        Attribute.VALUE: value, Attribute.UNWRAP: True, Attribute.TOKEN: False,
                        Attribute.UNWRAP_TEMPLATE: {Attribute.SENSITIVE: True, Attribute.ENCRYPT: False}})
    wrapped = keywrap.aes_key_wrap(value, bytes(32))
    template = {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
                Attribute.EXTRACTABLE: True}
    key = unwrap(s, C.CKM_AES_KEY_WRAP, None, handle, wrapped, template)
    assert raw.attribute(s, key, C.CKA_SENSITIVE) == b"\1"
    assert raw.attribute(s, key, C.CKA_ENCRYPT) == b"\0"
    with raw_rv(C.CKR_TEMPLATE_INCONSISTENT):
        unwrap(s, C.CKM_AES_KEY_WRAP, None, handle, wrapped, {**template, Attribute.SENSITIVE: False})
