"""Secrets at rest: every stored object is sealed (AES-256-GCM), none is in clear.

Private objects: each initialised token has one random 256-bit data key (DK).
Private objects are stored encrypted under DK. DK itself is stored twice,
sealed under a key derived from the user PIN and under one derived from the
SO PIN (PBKDF2-HMAC-SHA256, random salt), so only a PIN unlocks it. A wrong
PIN fails the GCM tag: no PIN hash is stored at all.

Public objects (a CKA_PRIVATE=FALSE key is still secret when CKA_SENSITIVE):
sealed under the HSM's storage key, 256 random bits kept in a key file of its
own (store/files.py), not in the database. A copied database or a backup of
it alone reveals no key material; whoever reads both files does.
"""

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from ... import gate

NONCE = 12


class WrongKey(Exception):
    """The sealed blob did not open: wrong PIN, or a tampered file."""


def new_data_key():
    return os.urandom(32)


def pin_key(pin, salt, iterations):
    gate.let_others_in()  # milliseconds of KDF outside the GIL
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations)
    return kdf.derive(pin)


def seal(key, plaintext, aad=b""):
    nonce = os.urandom(NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key, blob, aad=b""):
    try:
        return AESGCM(key).decrypt(blob[:NONCE], blob[NONCE:], aad)
    except (InvalidTag, ValueError):
        raise WrongKey() from None


def seal_under_pin(pin, data_key, iterations):
    """-> (salt, sealed DK) for the token row."""
    salt = os.urandom(16)
    return salt, seal(pin_key(pin, salt, iterations), data_key, b"ptkhsm-dk")


def unseal_with_pin(pin, salt, sealed, iterations):
    return unseal(pin_key(pin, salt, iterations), sealed, b"ptkhsm-dk")


STORAGE_KEY_SIZE = 32
_PUBLIC = b"ptkhsm-public-object"
_CHECK = b"ptkhsm-storage-check"


def new_storage_key():
    return os.urandom(STORAGE_KEY_SIZE)


def seal_public(storage_key, plaintext):
    return seal(storage_key, plaintext, _PUBLIC)


def unseal_public(storage_key, blob):
    return unseal(storage_key, blob, _PUBLIC)


def storage_check(storage_key):
    """A value the store keeps to recognise its storage key (a key file swapped or
    from another store is refused at open, not found out object by object)."""
    return seal(storage_key, b"", _CHECK)


def is_storage_key(storage_key, check):
    try:
        unseal(storage_key, check, _CHECK)
    except WrongKey:
        return False
    return True
