"""Secrets at rest: a token data key sealed under PIN-derived keys.

Each initialised token has one random 256-bit data key (DK). Private objects
are stored encrypted under DK with AES-256-GCM. DK itself is stored twice,
sealed under a key derived from the user PIN and under one derived from the
SO PIN (PBKDF2-HMAC-SHA256, random salt), so only a PIN unlocks it. A wrong
PIN fails the GCM tag: no PIN hash is stored at all.
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
