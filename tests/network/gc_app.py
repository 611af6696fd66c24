"""A python-pkcs11 program whose abandoned finds are freed by the garbage collector
mid-call (the collector runs after a varying number of allocations): each finalizer's
C_FindObjectsFinal is a call nested in whatever call its thread is making, inside
libptkhsm.so. Prints "ok N inside M" (N finds ended so, M of the collections run from
inside the library's own code) or raises."""

import gc
import hashlib
import os
import sys

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

lib = pkcs11.lib(os.environ["PKCS11_MODULE"])
token = lib.get_token(token_label=os.environ["PKCS11_TOKEN_LABEL"])
PIN = os.environ["PKCS11_TOKEN_PIN"]
ROUNDS = 25

main = token.open(rw=True, user_pin=PIN)
for i in range(12):
    main.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: "gc", Attribute.VALUE: b"%d" % i})
key = main.create_object({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                          Attribute.VALUE: b"k" * 32, Attribute.SIGN: True})
others = [token.open() for _ in range(ROUNDS)]
inside = []  # finalizers that ran while a call was inside the library's Python code


class Probe:
    def __del__(self):
        frame = sys._getframe(1)
        while frame is not None and "/ptkhsm/" not in frame.f_code.co_filename:
            frame = frame.f_back
        inside.append(frame is not None)


expected = hashlib.sha256(b"gc" * 500).digest()
try:
    for i, other in enumerate(others):
        gc.collect()                     # counts from 0: the next collection comes k allocations on,
        found = iter(other.get_objects({Attribute.LABEL: "gc"}))
        next(found)                      # a find left active on `other`
        cycle = [found, Probe()]
        cycle.append(cycle)              # only the collector frees it (and its finalizer ends the find)
        del found, cycle
        gc.set_threshold(20 + 37 * i % 300)  # somewhere in the calls below, mostly in the library's code
        for _ in range(3):
            assert main.digest(b"gc" * 500, mechanism=Mechanism.SHA256) == expected
            assert len(main.generate_random(128)) == 16
            assert len(key.sign(b"data", mechanism=Mechanism.SHA256_HMAC)) == 32
finally:
    gc.set_threshold(700, 10, 10)
gc.collect()
# Each find was ended by its finalizer: a new one starts on every session.
assert all(len(list(other.get_objects({Attribute.LABEL: "gc"}))) == 12 for other in others)
print("ok", len(others), "inside", sum(inside), flush=True)
