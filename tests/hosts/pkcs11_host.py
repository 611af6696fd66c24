"""A python-pkcs11 program, run by another interpreter from its own venv (tests/test_hosts.py).

pkcs11_host.py MODULE LABEL PIN roundtrip        AES and EC in session objects
pkcs11_host.py MODULE LABEL PIN store NAME       an AES token key NAME; prints a ciphertext
pkcs11_host.py MODULE LABEL PIN decrypt NAME HEX the key NAME decrypts HEX
pkcs11_host.py MODULE LABEL PIN loop             token keys until killed
pkcs11_host.py MODULE LABEL PIN labels           the labels of the token's secret keys
Prints one JSON line; "in_process" says whether ptkhsm runs in this interpreter.
"""

import hashlib
import json
import sys

import pkcs11
from pkcs11 import KeyType, Mechanism, ObjectClass

# AES-ECB: a mechanism without parameters, which every p11-kit's RPC carries
# (Debian 12's 0.24 does not carry an IV: docs/hosts.md)
AES = {"mechanism": Mechanism.AES_ECB}
MESSAGE = b"one data directory, two Pythons!"


def roundtrip(session):
    key = session.generate_key(KeyType.AES, 256)
    assert key.decrypt(key.encrypt(MESSAGE, **AES), **AES) == MESSAGE
    public, private = session.generate_keypair(KeyType.EC, mechanism=Mechanism.EC_KEY_PAIR_GEN,
                                               public_template={pkcs11.Attribute.EC_PARAMS:
                                                                bytes.fromhex("06082a8648ce3d030107")})
    digest = hashlib.sha256(MESSAGE).digest()  # CKM_ECDSA_SHA256 is not carried by p11-kit 0.24 either
    signature = private.sign(digest, mechanism=Mechanism.ECDSA)
    assert public.verify(digest, signature, mechanism=Mechanism.ECDSA)
    return {}


def store(session, name):
    key = session.generate_key(KeyType.AES, 128, label=name, store=True)
    return {"ciphertext": key.encrypt(MESSAGE, **AES).hex()}


def decrypt(session, name, ciphertext):
    key = session.get_key(object_class=ObjectClass.SECRET_KEY, label=name)
    return {"plaintext": key.decrypt(bytes.fromhex(ciphertext), **AES).decode()}


def loop(session):
    for count in range(10**9):
        session.generate_key(KeyType.AES, 128, label=f"loop-{count}", store=True)
        print(count, flush=True)


def labels(session):
    return {"labels": sorted(key.label for key in session.get_objects({pkcs11.Attribute.CLASS: ObjectClass.SECRET_KEY}))}


def main(module, label, pin, command, *args):
    token = pkcs11.lib(module).get_token(token_label=label)
    with token.open(rw=True, user_pin=pin) as session:
        result = {"roundtrip": roundtrip, "store": store, "decrypt": decrypt, "loop": loop, "labels": labels}[command](session, *args)
    result.update(ok=True, in_process="ptkhsm" in sys.modules, python="%d.%d" % sys.version_info[:2])
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
