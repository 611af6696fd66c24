"""Crash safety: kill -9 at random points while a process changes the store.

A forked child runs a random sequence of changes on the HSM in the data
directory: create, change and destroy token objects (public and private), make
key pairs, change the user PIN, initialise the token again. Before each change
it reports what it is about to do, after it the acknowledgement (a change is
acknowledged when its call returned). The parent kills it with SIGKILL after a
random delay, opens the store afresh and checks: the store opens, every
acknowledged change is there, and the one change in flight is either wholly
there or wholly absent (a key pair both halves or neither, a PIN the old or the
new one, a re-initialised token empty with its new label or the old one intact).
Then the next child continues on the same directory.

    run(datapath, rounds, seed) -> {"kills": n, "acknowledged": n, "in_flight_done": n}
"""

import json
import os
import random
import signal
import time
import traceback

from ptkhsm import constants as C
from ptkhsm.config import Config
from ptkhsm.errors import CKRError
from ptkhsm.hsm.core import HSM
from ptkhsm.mechparams import Mechanism

SO = b"crash-so-pin"
PINS = (b"crash-pin-a", b"crash-pin-b")
RW = C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION
P256 = bytes.fromhex("06082a8648ce3d030107")


def make_hsm(datapath):
    return HSM(Config({"ET_PTKC_SW_DATAPATH": str(datapath), "HOME": str(datapath),
                       "ET_PTKC_SW_PIN_KDF_ITERATIONS": "1000",
                       "ET_PTKC_SW_MAX_LOGIN_FAILURES": "1000"})).application()


def close(hsm):
    hsm.close_everything()
    hsm.store._db.close()


class Model:
    """What the acknowledged changes say the token holds."""

    def __init__(self):
        self.label = b"crash-0".ljust(32)
        self.pin = PINS[0]
        self.pin_set = True
        self.objects = {}  # CKA_LABEL -> CKA_VALUE (key pairs: label -> None)


# -- the child ----------------------------------------------------------------------
def _child(datapath, seed, model, out):
    rng = random.Random(seed)
    hsm = make_hsm(datapath)

    def say(*record):
        os.write(out, (json.dumps(record) + "\n").encode())

    def user_session():
        s = hsm.open_session(0, RW)
        hsm.login(s, C.CKU_USER, model.pin)
        return s

    def init_pin():
        say("initpin", model.pin.decode())
        so = hsm.open_session(0, RW)
        hsm.login(so, C.CKU_SO, SO)
        hsm.init_pin(so, model.pin)
        hsm.close_session(so)
        model.pin_set = True
        say("ack")

    say("ready")
    if not model.pin_set:  # the last child was killed between C_InitToken and C_InitPIN
        init_pin()
    s = user_session()
    find = _finder(hsm)
    n = 0
    while True:
        n += 1
        label = f"o-{seed}-{n}".encode()
        choice = rng.random()
        # data objects change and go; key pairs stay (destroying both halves is two calls)
        names = sorted(name for name, value in model.objects.items() if value is not None)
        if choice < 0.35 or not names:
            value = os.urandom(rng.randrange(1, 200))
            private = rng.random() < 0.5
            say("create", label.decode(), value.hex())
            hsm.create_object(s, [(C.CKA_CLASS, C.CKO_DATA), (C.CKA_TOKEN, True), (C.CKA_PRIVATE, private),
                                  (C.CKA_LABEL, label), (C.CKA_VALUE, value)])
            model.objects[label] = value
        elif choice < 0.55:
            name = rng.choice(names)
            value = os.urandom(rng.randrange(1, 200))
            say("change", name.decode(), value.hex())
            hsm.set_attributes(s, find(s, name)[0], [(C.CKA_VALUE, value)])
            model.objects[name] = value
        elif choice < 0.75:
            name = rng.choice(names)
            say("destroy", name.decode())
            for handle in find(s, name):
                hsm.destroy_object(s, handle)
            del model.objects[name]
        elif choice < 0.85:
            say("pair", label.decode())
            hsm.generate_key_pair(s, Mechanism(C.CKM_EC_KEY_PAIR_GEN),
                                  [(C.CKA_TOKEN, True), (C.CKA_EC_PARAMS, P256), (C.CKA_LABEL, label)],
                                  [(C.CKA_TOKEN, True), (C.CKA_LABEL, label), (C.CKA_SIGN, True)])
            model.objects[label] = None
        elif choice < 0.95:
            new = PINS[1] if model.pin == PINS[0] else PINS[0]
            say("setpin", new.decode())
            hsm.set_pin(s, model.pin, new)
            model.pin = new
        else:
            new_label = f"crash-{seed}-{n}".encode().ljust(32)
            hsm.close_session(s)
            say("inittoken", new_label.decode())
            hsm.init_token(0, SO, new_label)
            model.label, model.objects, model.pin_set = new_label, {}, False
            say("ack")
            init_pin()
            s = user_session()
            continue
        say("ack")


def _finder(hsm):
    def find(s, label):
        hsm.find_init(s, [(C.CKA_LABEL, label)])
        found = hsm.find(s, 10)
        hsm.find_final(s)
        return found
    return find


# -- the parent ---------------------------------------------------------------------
def _records(text):
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            break  # a line cut by the kill
    return records


def _apply(model, record):
    """An acknowledged change, into the model."""
    op = record[0]
    if op == "create" or op == "change":
        model.objects[record[1].encode()] = bytes.fromhex(record[2])
    elif op == "destroy":
        model.objects.pop(record[1].encode(), None)
    elif op == "pair":
        model.objects[record[1].encode()] = None
    elif op == "setpin":
        model.pin = record[1].encode()
    elif op == "inittoken":
        model.label, model.objects, model.pin_set = record[1].encode(), {}, False
    elif op == "initpin":
        model.pin, model.pin_set = record[1].encode(), True


def _state(hsm, pin):
    """-> (label, pin that logs in or None, {label: value or None for key pairs}, pair halves ok)."""
    info = hsm.token_info(0)
    s = hsm.open_session(0, RW)
    logged = None
    for candidate in (pin, *PINS):
        try:
            hsm.login(s, C.CKU_USER, candidate)
            logged = candidate
            break
        except CKRError as exc:
            if exc.rv == C.CKR_USER_PIN_NOT_INITIALIZED:
                break
            if exc.rv != C.CKR_PIN_INCORRECT:
                raise
    hsm.find_init(s, [])
    handles = hsm.find(s, 100000)
    hsm.find_final(s)
    objects, classes = {}, {}
    for handle in handles:
        cls, label = hsm.get_attributes(s, handle, [C.CKA_CLASS, C.CKA_LABEL])
        classes.setdefault(label, set()).add(cls)
        if cls == C.CKO_DATA:
            objects[label] = hsm.get_attributes(s, handle, [C.CKA_VALUE])[0]
        else:
            objects[label] = None
    halves = all(kinds == {C.CKO_PUBLIC_KEY, C.CKO_PRIVATE_KEY} for label, kinds in classes.items()
                 if objects[label] is None)
    hsm.close_session(s)
    return info["label"], logged, objects, halves


def _check(datapath, model, records):
    """Verify the store against the acknowledged records; fold the change in flight into
    the model as the store shows it. -> True if the change in flight had been made."""
    pending = None
    for record in records:
        if record == ["ack"]:
            if pending:
                _apply(model, pending)
            pending = None
        elif record != ["ready"]:
            pending = record
    hsm = make_hsm(datapath)  # the store opens
    try:
        label, logged, objects, halves = _state(hsm, model.pin)
    finally:
        close(hsm)
    assert halves, f"a key pair with one half only: logged in {logged!r}, model pin {model.pin!r}, in flight {pending}"
    before = Model()
    before.label, before.pin, before.pin_set, before.objects = model.label, model.pin, model.pin_set, dict(model.objects)
    after = None
    if pending:
        after = Model()
        after.label, after.pin, after.pin_set, after.objects = model.label, model.pin, model.pin_set, dict(model.objects)
        _apply(after, pending)
    seen = (label, logged if model.pin_set or logged else None, objects)
    for candidate in filter(None, (before, after)):
        expected_pin = candidate.pin if candidate.pin_set else None
        if (label, logged, objects) == (candidate.label, expected_pin, candidate.objects):
            model.__dict__.update(candidate.__dict__)
            return candidate is after
    raise AssertionError(f"store differs from every acknowledged state: in flight {pending}, "
                         f"seen label={seen[0]!r} pin={seen[1]!r} objects={sorted(seen[2])}, "
                         f"acknowledged objects={sorted(model.objects)} pin={model.pin!r}")


def prepare(datapath):
    hsm = make_hsm(datapath)
    model = Model()
    hsm.init_token(0, SO, model.label)
    s = hsm.open_session(0, RW)
    hsm.login(s, C.CKU_SO, SO)
    hsm.init_pin(s, model.pin)
    close(hsm)
    return model


def run(datapath, rounds, seed, max_delay=0.06):
    rng = random.Random(seed)
    model = prepare(datapath)
    acknowledged = in_flight_done = 0
    for round_number in range(rounds):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                _child(datapath, seed * 100003 + round_number, model, write)
            except BaseException:
                os.write(write, json.dumps(["error", traceback.format_exc()]).encode() + b"\n")
            finally:
                os._exit(1)
        os.close(write)
        buffer = b""
        while b'["ready"]' not in buffer:
            chunk = os.read(read, 65536)
            if not chunk:
                break
            buffer += chunk
        time.sleep(rng.uniform(0, max_delay))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        while True:
            chunk = os.read(read, 65536)
            if not chunk:
                break
            buffer += chunk
        os.close(read)
        if not os.WIFSIGNALED(status):
            raise AssertionError(f"round {round_number}: the child ended by itself ({status}): "
                                 f"{buffer[-3000:].decode(errors='replace')}")
        records = _records(buffer.decode(errors="replace"))
        acknowledged += sum(1 for r in records if r == ["ack"])
        in_flight_done += _check(datapath, model, records)
    return {"kills": rounds, "acknowledged": acknowledged, "in_flight_done": in_flight_done}
