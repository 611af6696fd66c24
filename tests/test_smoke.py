"""The module loads in python-pkcs11 and does the basics."""

from pkcs11 import KeyType, Mechanism


def test_token_info(token):
    assert token.label == "ptkhsm-test"
    assert token.manufacturer_id == "ptkhsm project"


def test_aes_roundtrip(session):
    key = session.generate_key(KeyType.AES, 256)
    iv = session.generate_random(128)
    ciphertext = key.encrypt(b"hello world", mechanism_param=iv)
    assert key.decrypt(ciphertext, mechanism_param=iv) == b"hello world"


def test_rsa_sign_verify(session):
    public, private = session.generate_keypair(KeyType.RSA, 2048)
    signature = private.sign(b"data", mechanism=Mechanism.SHA256_RSA_PKCS)
    assert public.verify(b"data", signature, mechanism=Mechanism.SHA256_RSA_PKCS)
    assert not public.verify(b"other", signature, mechanism=Mechanism.SHA256_RSA_PKCS)
