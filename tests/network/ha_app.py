"""A python-pkcs11 program that must not notice its HSM server die (HA mode).

Each round, on three sessions of one logged-in application: a find stopped
half-way, a multi-part AES-CBC encryption with a token key and a multi-part
HMAC with a session key made by C_CreateObject, all mid-way when the program
prints "kill" and waits for a line on stdin (the test kills the server
meanwhile); then everything carries on and is checked against one-shot
results. Prints "round N ok" or raises (exit status 1).
"""

import os
import sys

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

lib = pkcs11.lib(os.environ["PKCS11_MODULE"])
token = lib.get_token(token_label=os.environ["PKCS11_TOKEN_LABEL"])
PIN = os.environ["PKCS11_TOKEN_PIN"]
PARTS = [bytes([i]) * 64 for i in range(6)]
IV = bytes(range(16))

finder = token.open(rw=True, user_pin=PIN)  # the login is the application's: all three share it
encrypter, signer = token.open(rw=True), token.open(rw=True)
aes = finder.generate_key(KeyType.AES, 128, store=True, label="ha-key")
for i in range(15):
    finder.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: "ha-find", Attribute.TOKEN: True,
                          Attribute.PRIVATE: True, Attribute.VALUE: b"%d" % i})
for i in range(10):
    finder.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: "ha-find", Attribute.TOKEN: False,
                          Attribute.VALUE: b"s%d" % i})
hmac_key = signer.create_object({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                                 Attribute.VALUE: b"k" * 32, Attribute.SIGN: True, Attribute.TOKEN: False})
print("ready", flush=True)


def paused_parts():
    yield PARTS[0]
    yield PARTS[1]
    print("kill", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no go")
    yield from PARTS[2:]


for round_number in (1, 2):
    found = iter(finder.get_objects({Attribute.LABEL: "ha-find"}))
    seen = [next(found) for _ in range(5)]          # the server returned a batch of 10
    enc_key = encrypter.get_key(label="ha-key")
    encryption = enc_key.encrypt(iter(PARTS), mechanism_param=IV)
    ciphertext = next(encryption) + next(encryption)
    signature = hmac_key.sign(paused_parts(), mechanism=Mechanism.SHA256_HMAC)  # the kill comes mid-way
    ciphertext += b"".join(encryption)
    seen += list(found)
    assert len({obj.handle for obj in seen}) == 25, len(seen)
    assert {obj[Attribute.VALUE] for obj in seen} == {b"%d" % i for i in range(15)} | {b"s%d" % i for i in range(10)}
    assert ciphertext == enc_key.encrypt(b"".join(PARTS), mechanism_param=IV)
    assert signature == hmac_key.sign(b"".join(PARTS), mechanism=Mechanism.SHA256_HMAC)
    print(f"round {round_number} ok", flush=True)
