"""One load client process: THREADS threads, each with its own session of one
logged-in application, sign (P-256) / encrypt (AES-CBC) / find in a loop for
SECONDS. Prints `ops N` at the end; any error is printed and exits 1."""

import os
import sys
import threading
import time

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

lib = pkcs11.lib(os.environ["PKCS11_MODULE"])
token = lib.get_token(token_label=os.environ["PKCS11_TOKEN_LABEL"])
seconds = float(sys.argv[1])
threads = int(sys.argv[2])
first = token.open(rw=True, user_pin=os.environ["PKCS11_TOKEN_PIN"])
counts, errors = [0] * threads, []


def work(i):
    session = first if i == 0 else token.open(rw=True)
    try:
        signer = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC, label="load-ec")
        aes = session.get_key(ObjectClass.SECRET_KEY, KeyType.AES, label="load-aes")
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            signer.sign(b"load %d" % n, mechanism=Mechanism.ECDSA_SHA256)
            aes.encrypt(b"x" * 256, mechanism_param=bytes(16))
            assert len(list(session.get_objects({Attribute.LABEL: "load-aes"}))) == 1
            n += 3
        counts[i] = n
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        if session is not first:
            session.close()


pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
for t in pool:
    t.start()
for t in pool:
    t.join()
first.close()
if errors:
    print("errors", errors, flush=True)
    sys.exit(1)
print("ops", sum(counts), flush=True)
