"""Objects of every class through python-pkcs11 and the real .so: create, find on any
attribute, copy, set, destroy; certificates get their check value."""

import datetime

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, CertificateType, ObjectClass

from conftest import USER_PIN


def _certificate():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ptkhsm test")])
    now = datetime.datetime(2026, 1, 1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    return cert


def test_data_object_lifecycle(session):
    obj = session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True,
                                 Attribute.LABEL: "notes", Attribute.APPLICATION: "tests",
                                 Attribute.VALUE: b"hello"})
    found = list(session.get_objects({Attribute.APPLICATION: "tests"}))
    assert [o[Attribute.LABEL] for o in found] == ["notes"]
    obj[Attribute.VALUE] = b"changed"
    assert obj[Attribute.VALUE] == b"changed"
    copy = obj.copy({Attribute.TOKEN: False, Attribute.LABEL: "copy"})
    assert copy[Attribute.VALUE] == b"changed"
    obj.destroy()
    copy.destroy()
    assert not list(session.get_objects({Attribute.APPLICATION: "tests"}))


def test_certificate_object(session):
    cert = _certificate()
    der = cert.public_bytes(serialization.Encoding.DER)
    obj = session.create_object({
        Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
        Attribute.TOKEN: True, Attribute.LABEL: "cert",
        Attribute.SUBJECT: cert.subject.public_bytes(), Attribute.ISSUER: cert.issuer.public_bytes(),
        Attribute.SERIAL_NUMBER: b"\x02\x01\x07", Attribute.VALUE: der})
    digest = hashes.Hash(hashes.SHA1())
    digest.update(der)
    assert obj[Attribute.CHECK_VALUE] == digest.finalize()[:3]
    (found,) = session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.SERIAL_NUMBER: b"\x02\x01\x07"})
    assert found[Attribute.VALUE] == der
    with pytest.raises(pkcs11.exceptions.TemplateIncomplete):
        session.create_object({Attribute.CLASS: ObjectClass.CERTIFICATE,
                               Attribute.CERTIFICATE_TYPE: CertificateType.X_509, Attribute.VALUE: der})
    found.destroy()


def test_find_on_any_attribute(session):
    key = session.generate_key(pkcs11.KeyType.AES, 128, label="findme", id=b"\x42",
                               template={Attribute.DERIVE: True})
    assert list(session.get_objects({Attribute.ID: b"\x42", Attribute.DERIVE: True})) == [key]
    assert list(session.get_objects({Attribute.VALUE_LEN: 16, Attribute.LABEL: "findme"})) == [key]
    assert not list(session.get_objects({Attribute.VALUE_LEN: 32, Attribute.LABEL: "findme"}))


def test_sensitive_value_unreadable(session):
    key = session.generate_key(pkcs11.KeyType.AES, 128, template={Attribute.SENSITIVE: True})
    with pytest.raises(pkcs11.exceptions.AttributeSensitive):
        key[Attribute.VALUE]
    open_key = session.generate_key(pkcs11.KeyType.AES, 128,
                                    template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True})
    assert len(open_key[Attribute.VALUE]) == 16


def test_private_objects_need_login(token):
    with token.open(rw=True, user_pin=USER_PIN) as logged_in:
        logged_in.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True,
                                 Attribute.PRIVATE: True, Attribute.LABEL: "secret-note"})
    # the last session closed: the application is logged out
    with token.open(rw=True) as public:
        assert not list(public.get_objects({Attribute.LABEL: "secret-note"}))
        with pytest.raises(pkcs11.exceptions.UserNotLoggedIn):
            public.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.PRIVATE: True})
    with token.open(rw=True, user_pin=USER_PIN) as logged_in:
        (obj,) = logged_in.get_objects({Attribute.LABEL: "secret-note"})
        obj.destroy()


def test_unique_id_assigned_on_creation(session):
    """CKA_UNIQUE_ID (v3.0): the token sets it when an object is made (created, generated,
    copied), different for each, read-only; a template cannot give it and no change takes it."""
    import re

    from mechanisms import raw
    from ptkhsm import constants as C

    data = session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.VALUE: b"x", Attribute.TOKEN: True,
                                  Attribute.LABEL: "unique-id"})
    key = session.generate_key(pkcs11.KeyType.AES, 128)
    copy = data.copy({Attribute.LABEL: "unique-id copy"})
    ids = [raw.attribute(session, obj.handle, C.CKA_UNIQUE_ID) for obj in (data, key, copy)]
    assert all(re.fullmatch(rb"[0-9a-f]{32}", i) for i in ids), ids
    assert len(set(ids)) == 3
    with pytest.raises(pkcs11.AttributeReadOnly):
        data[C.CKA_UNIQUE_ID] = "0" * 32
    with pytest.raises(pkcs11.AttributeReadOnly):
        session.create_object({Attribute.CLASS: ObjectClass.DATA, C.CKA_UNIQUE_ID: "mine", Attribute.TOKEN: False})
    data[Attribute.LABEL] = "unique-id renamed"
    assert raw.attribute(session, data.handle, C.CKA_UNIQUE_ID) == ids[0]
    data.destroy()
    copy.destroy()
