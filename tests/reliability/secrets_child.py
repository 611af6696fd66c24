"""Handles known secrets through the real .so (python-pkcs11), succeeding and
failing on purpose, so that tests/test_secrets.py can look for them in the data
directory and in every log line the module wrote at DEBUG.

    python secrets_child.py MODULE SNAPSHOT   (the token is initialised by the caller)

Before C_Finalize it copies the data directory's files (the -wal and -shm of
the open database too) into SNAPSHOT.

Prints one JSON line: the secrets used, hex encoded.
"""

import json
import os
import shutil
import sys

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error

USER_PIN, NEW_PIN, WRONG_PIN = "us3r-pin-1", "n3w-pin-22", "wr0ng-pin-3"
SECRETS = {
    "public_sensitive_aes": bytes.fromhex("a1" * 4 + "5ec7e7" * 8 + "b2" * 4),
    "private_aes": bytes.fromhex("c3" * 4 + "0ddba11" + "0" + "7e57ab1e" * 6 + "d4" * 4)[:32],
    "public_generic": bytes.fromhex("9e9e" + "f00dfeed" * 7 + "e5e5"),
    "session_aes": bytes.fromhex("77" * 8 + "cafe" * 12),
}


def rsa_private_template(cryptography_key, token, private):
    numbers = cryptography_key.private_numbers()
    as_bytes = lambda n: n.to_bytes((n.bit_length() + 7) // 8, "big")  # noqa: E731
    return {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: KeyType.RSA,
            Attribute.TOKEN: token, Attribute.PRIVATE: private, Attribute.SENSITIVE: True,
            Attribute.SIGN: True, Attribute.LABEL: "rsa-secret",
            Attribute.MODULUS: as_bytes(numbers.public_numbers.n),
            Attribute.PUBLIC_EXPONENT: as_bytes(numbers.public_numbers.e),
            Attribute.PRIVATE_EXPONENT: as_bytes(numbers.d), Attribute.PRIME_1: as_bytes(numbers.p),
            Attribute.PRIME_2: as_bytes(numbers.q), Attribute.EXPONENT_1: as_bytes(numbers.dmp1),
            Attribute.EXPONENT_2: as_bytes(numbers.dmq1), Attribute.COEFFICIENT: as_bytes(numbers.iqmp)}


def aes(value, label, token=True, private=False):
    return {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
            Attribute.TOKEN: token, Attribute.PRIVATE: private, Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: True, Attribute.ENCRYPT: True, Attribute.DECRYPT: True,
            Attribute.WRAP: True, Attribute.UNWRAP: True, Attribute.LABEL: label, Attribute.VALUE: value}


def failing(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except (PKCS11Error, TypeError, ValueError):
        return
    raise AssertionError(f"{call} succeeded")


def main(module, snapshot):
    from cryptography.hazmat.primitives.asymmetric import rsa
    rsa_key = rsa.generate_private_key(65537, 2048)
    numbers = rsa_key.private_numbers()
    secrets = dict(SECRETS)
    for name, value in (("rsa_d", numbers.d), ("rsa_p", numbers.p), ("rsa_q", numbers.q)):
        secrets[name] = value.to_bytes((value.bit_length() + 7) // 8, "big")

    lib = pkcs11.lib(module)
    token = next(lib.get_tokens())
    failing(token.open, user_pin=WRONG_PIN)
    with token.open(rw=True, user_pin=USER_PIN) as session:
        public = session.create_object(aes(secrets["public_sensitive_aes"], "pub-sensitive"))
        session.create_object(aes(secrets["private_aes"], "priv", private=True))
        session.create_object({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                               Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.SENSITIVE: False,
                               Attribute.SIGN: True, Attribute.VALUE: secrets["public_generic"]})
        session.create_object(rsa_private_template(rsa_key, token=True, private=False))
        wrapper = session.create_object(aes(secrets["session_aes"], "session", token=False))
        # failures whose reasons the module logs at DEBUG
        failing(session.create_object, {**aes(secrets["session_aes"][:31], "short"), Attribute.TOKEN: True})
        failing(session.create_object, {**aes(secrets["session_aes"], "bad"), Attribute.KEY_TYPE: KeyType.DES3})
        failing(public.__getitem__, Attribute.VALUE)
        failing(public.__setitem__, Attribute.VALUE, secrets["private_aes"])
        failing(session.create_object, {**rsa_private_template(rsa_key, True, False),
                                        Attribute.PRIME_1: secrets["rsa_p"][:-1] + b"\0"})
        wrapped = wrapper.wrap_key(public, mechanism=Mechanism.AES_KEY_WRAP)
        failing(wrapper.unwrap_key, ObjectClass.SECRET_KEY, KeyType.AES, wrapped[:-8] + b"\0" * 8,
                mechanism=Mechanism.AES_KEY_WRAP)
        failing(wrapper.unwrap_key, ObjectClass.SECRET_KEY, KeyType.AES, wrapped,
                mechanism=Mechanism.AES_KEY_WRAP, template={Attribute.VALUE: secrets["private_aes"]})
        ciphertext = wrapper.encrypt(secrets["rsa_q"][:64], mechanism=Mechanism.AES_ECB)
        failing(wrapper.decrypt, ciphertext[:-1], mechanism=Mechanism.AES_ECB)
        failing(session.get_key, label="nothing-here")
        failing(token.open, rw=True, user_pin=USER_PIN)
        failing(session.set_pin, WRONG_PIN, NEW_PIN)
        failing(session.set_pin, USER_PIN, "x" * 40 + NEW_PIN)
        session.set_pin(USER_PIN, NEW_PIN)
        failing(session.set_pin, USER_PIN, NEW_PIN)
    with token.open(user_pin=NEW_PIN) as session:
        assert len(list(session.get_objects({Attribute.LABEL: "priv"}))) == 1
        datapath = os.environ["ET_PTKC_SW_DATAPATH"]
        shutil.copytree(datapath, snapshot, dirs_exist_ok=True)  # the open files, ExtToken's too
    print(json.dumps({"pins": [USER_PIN, NEW_PIN, WRONG_PIN],
                      "secrets": {name: value.hex() for name, value in secrets.items()}}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
