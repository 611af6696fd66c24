"""One member of an HSM group for the tests: python-pkcs11 over the real libptkhsm.so in
its own process, with the environment (data directory, ET_PTKC_SW_STORE) it was given.

    peer.py MODULE LABEL            says "ready", then reads commands on stdin, one reply line each:
      find PREFIX                     -> labels of the public data objects starting with PREFIX, sorted
                                         | the exception's name
      reopen                          -> OK: a new session in place of the first
      create LABEL                    -> OK | the exception's name
      login PIN                       -> OK | the exception's name (then logs out)
      label                           -> the label of the token in slot PTKHSM_PEER_SLOT (0)
      user PIN                        -> OK | the exception's name: a second session, logged in, kept
      user-create LABEL               -> OK | the exception's name: a private data object, in that session
      user-find PREFIX                -> labels of the private data objects found in it | the exception's name
    peer.py MODULE LABEL write PREFIX N   creates N data objects PREFIX-i, printing each
                                          label acknowledged (CKR_OK) and, on an error, its name
"""

import os
import sys
import time

import pkcs11
from pkcs11 import Attribute, ObjectClass

USER_PIN = "1234"
SLOT = int(os.environ.get("PTKHSM_PEER_SLOT", "0"))


def data_object(session, label, private=False):
    session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True, Attribute.PRIVATE: private,
                           Attribute.LABEL: label, Attribute.VALUE: label.encode()})


def labels(session, prefix, private=False):
    found = session.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.PRIVATE: private})
    return sorted(label for label in (o[Attribute.LABEL] for o in found) if label.startswith(prefix))


def listing(session, prefix, private=False):
    found = []
    outcome = attempt(lambda: found.extend(labels(session, prefix, private)))
    return ",".join(found) if outcome == "OK" else outcome


def attempt(action):
    try:
        action()
        return "OK"
    except pkcs11.PKCS11Error as exc:
        return type(exc).__name__


def serve(lib, label):
    token = lib.get_token(token_label=label)
    session = token.open(rw=True)
    user = None
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "find":
            reply = listing(session, argument)
        elif command == "reopen":
            session = token.open(rw=True)
            reply = "OK"
        elif command == "create":
            reply = attempt(lambda: data_object(session, argument))
        elif command == "login":
            def login():
                token.open(user_pin=argument).close()
            reply = attempt(login)
        elif command == "user":
            def log_in():
                nonlocal user
                user = token.open(rw=True, user_pin=argument)
            reply = attempt(log_in)
        elif command == "user-create":
            reply = attempt(lambda: data_object(user, argument, private=True))
        elif command == "user-find":
            reply = listing(user, argument, private=True)
        elif command == "label":
            reply = lib.get_slots()[SLOT].get_token().label
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
