"""One member of an HSM group for the tests: python-pkcs11 over the real libptkhsm.so in
its own process, with the environment (data directory, ET_PTKC_SW_STORE) it was given.

    peer.py MODULE LABEL            says "ready", then reads commands on stdin, one reply line each:
      find PREFIX                     -> labels of the data objects starting with PREFIX, sorted
      create LABEL                    -> OK | the exception's name
      login PIN                       -> OK | the exception's name (then logs out)
      label                           -> the slot 0 token's label
    peer.py MODULE LABEL write PREFIX N   creates N data objects PREFIX-i, printing each
                                          label acknowledged (CKR_OK) and, on an error, its name
"""

import sys
import time

import pkcs11
from pkcs11 import Attribute, ObjectClass

USER_PIN = "1234"


def data_object(session, label):
    session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True, Attribute.PRIVATE: False,
                           Attribute.LABEL: label, Attribute.VALUE: label.encode()})


def labels(session, prefix):
    found = session.get_objects({Attribute.CLASS: ObjectClass.DATA})
    return sorted(label for label in (o[Attribute.LABEL] for o in found) if label.startswith(prefix))


def attempt(action):
    try:
        action()
        return "OK"
    except pkcs11.PKCS11Error as exc:
        return type(exc).__name__


def serve(lib, label):
    token = lib.get_token(token_label=label)
    session = token.open(rw=True)
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "find":
            reply = ",".join(labels(session, argument))
        elif command == "create":
            reply = attempt(lambda: data_object(session, argument))
        elif command == "login":
            def login():
                token.open(user_pin=argument).close()
            reply = attempt(login)
        elif command == "label":
            reply = lib.get_slots()[0].get_token().label
        else:
            reply = f"unknown command {command}"
        print(reply, flush=True)


def write(lib, label, prefix, count):
    """Create objects one by one, riding out store faults: a failed create is retried
    under a new label, so only acknowledged labels are printed."""
    session = None
    for i in range(count):
        name = f"{prefix}-{i}"
        while True:
            try:
                if session is None:
                    session = lib.get_token(token_label=label).open(rw=True)
                data_object(session, name)
                print(name, flush=True)
                break
            except pkcs11.PKCS11Error as exc:
                print(f"! {type(exc).__name__}", flush=True)
                name += "r"
                time.sleep(0.05)


def main():
    lib = pkcs11.lib(sys.argv[1])
    if len(sys.argv) > 3 and sys.argv[3] == "write":
        write(lib, sys.argv[2], sys.argv[4], int(sys.argv[5]))
    else:
        serve(lib, sys.argv[2])


if __name__ == "__main__":
    main()
