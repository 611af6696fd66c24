"""Several processes on one data directory, through the real .so (python-pkcs11).

    python multiproc.py MODULE ROLE INDEX SECONDS

ROLE writer: creates, changes and destroys its own token objects (labels
w<INDEX>-<n>, public and private), logs out and in again now and then; writer 0
also changes the user PIN back and forth between the two PINs, so logins race
PIN changes in other processes. ROLE reader: finds every object and reads it,
checking that each value is one its writer wrote (values carry their label).
Each process prints one JSON line: its counts, its errors (any failure that is
not the expected answer to a race), and for writers the objects it holds at the
end (label -> value hex), which the parent compares with what a fresh process
finds.
"""

import json
import os
import random
import sys
import time

import pkcs11
from pkcs11 import Attribute, ObjectClass
from pkcs11.exceptions import ObjectHandleInvalid, PinIncorrect, PKCS11Error, UserNotLoggedIn

PINS = ("race-pin-a", "race-pin-b")


def login(token):
    """A logged-in read/write session, whichever of the two PINs is current."""
    while True:
        for pin in PINS:
            try:
                return token.open(rw=True, user_pin=pin), pin
            except PinIncorrect:
                continue


def value_for(label, n):
    return f"{label}:{n}:".encode() + os.urandom(16)


def writer(token, index, seconds, report):
    rng = random.Random(index)
    session, pin = login(token)
    mine = {}
    n = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        n += 1
        choice = rng.random()
        try:
            if choice < 0.5 or not mine:
                label = f"w{index}-{n}"
                value = value_for(label, n)
                session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True,
                                       Attribute.PRIVATE: n % 2 == 0, Attribute.LABEL: label,
                                       Attribute.VALUE: value})
                mine[label] = value
                report["created"] += 1
            elif choice < 0.7:
                label = rng.choice(sorted(mine))
                value = value_for(label, n)
                (obj,) = session.get_objects({Attribute.LABEL: label})
                obj[Attribute.VALUE] = value
                mine[label] = value
                report["changed"] += 1
            elif choice < 0.85:
                label = rng.choice(sorted(mine))
                (obj,) = session.get_objects({Attribute.LABEL: label})
                obj.destroy()
                del mine[label]
                report["destroyed"] += 1
            elif choice < 0.93 and index == 0:
                new = PINS[1] if pin == PINS[0] else PINS[0]
                session.set_pin(pin, new)
                pin = new
                report["pin_changes"] += 1
            else:
                session.close()  # the last session: logged out
                session, pin = login(token)
                report["logins"] += 1
        except UserNotLoggedIn:
            # not a race of ours: a login is per application and nobody else logs us out
            report["errors"].append("CKR_USER_NOT_LOGGED_IN")
        except PKCS11Error as exc:
            report["errors"].append(f"{type(exc).__name__}: {exc}")
    session.close()
    report["objects"] = {label: value.hex() for label, value in mine.items()}


def reader(token, seconds, report):
    session, _ = login(token)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            for obj in session.get_objects({Attribute.CLASS: ObjectClass.DATA}):
                try:
                    label, value = obj[Attribute.LABEL], obj[Attribute.VALUE]
                except ObjectHandleInvalid:
                    report["vanished"] += 1  # destroyed by its writer between find and read
                    continue
                if not value.startswith(f"{label}:".encode()):
                    report["errors"].append(f"{label}: value {value[:40]!r} is not its own")
                report["read"] += 1
            report["scans"] += 1
        except PKCS11Error as exc:
            report["errors"].append(f"{type(exc).__name__}: {exc}")
    session.close()


def main(module, role, index, seconds):
    lib = pkcs11.lib(module)
    token = lib.get_token(token_label="race")
    report = {"role": role, "index": index, "errors": [], "created": 0, "changed": 0, "destroyed": 0,
              "pin_changes": 0, "logins": 0, "read": 0, "scans": 0, "vanished": 0}
    if role == "writer":
        writer(token, index, seconds, report)
    elif role == "reader":
        reader(token, seconds, report)
    elif role == "final":
        session, _ = login(token)
        report["objects"] = {obj[Attribute.LABEL]: obj[Attribute.VALUE].hex()
                             for obj in session.get_objects({Attribute.CLASS: ObjectClass.DATA})}
        session.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
