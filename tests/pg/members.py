"""Members of an HSM group for the tests: peer processes (python-pkcs11 over the real
module, tests/pg/peer.py), their environments, and the accounting of writers."""

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from conftest import MODULE, USER_PIN

PEER = str(Path(__file__).with_name("peer.py"))
LABEL = "group"


def member_env(pg_uri, **extra):
    """An embedded member of the group on pg_uri, with a data directory of its own."""
    # every member holds a copy of the group's storage key file (pg_uri's fixture names it)
    env = {"PATH": "/usr/bin:/bin", "HOME": tempfile.mkdtemp(prefix="ptkhsm-home-"),
           "ET_PTKC_SW_DATAPATH": tempfile.mkdtemp(prefix="ptkhsm-member-"), "ET_PTKC_SW_STORE": pg_uri,
           "ET_PTKC_SW_PIN_KDF_ITERATIONS": "1000",
           "ET_PTKC_SW_STORAGE_KEYFILE": os.environ["ET_PTKC_SW_STORAGE_KEYFILE"],
           # slot 0's ExtToken keeps its objects in files of each member's data directory,
           # not in the shared store: the group shares the HSM's own token
           "ET_PTKC_EXTTOKEN_ENABLE": "0"}
    env.update(extra)
    return env


class Member:
    """A long-lived peer process answering commands."""

    def __init__(self, env):
        self.proc = subprocess.Popen([sys.executable, PEER, MODULE, LABEL], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout.readline() == "ready\n", "peer did not start"

    def ask(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        assert reply, f"peer died on {line!r}"
        return reply.rstrip("\n")

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def eventually(member, line, expected, within=2.0):
    """The member's reply to line becomes expected within `within` seconds -> calls it took.
    A member sees another's commit in its first call after the notification reached it
    (no round trip per call): on an idle machine that is the very next call, on a loaded
    one the delivery can lag the other member's reply by a few scheduler ticks."""
    deadline = time.monotonic() + within
    calls = 0
    while True:
        calls += 1
        reply = member.ask(line)
        if reply == expected or time.monotonic() > deadline:
            assert reply == expected, f"{line!r} after {within} s: {reply!r}, expected {expected!r}"
            return calls
        time.sleep(0.01)


def writer(env, prefix, count):
    """A process creating `count` data objects prefix-i, printing each one acknowledged."""
    return subprocess.Popen([sys.executable, PEER, MODULE, LABEL, "write", prefix, str(count)],
                            env=env, text=True, stdout=subprocess.PIPE)


def acknowledged(writers, first=()):
    """Wait for the writers -> (labels acknowledged, error lines); `first`: lines already read."""
    acked, errors = [], []
    for proc, head in zip(writers, first or [""] * len(writers)):
        # Through the reader that read `first`: communicate() reads the pipe itself and
        # would lose the lines that readline() had already buffered.
        out = proc.stdout.read()
        assert proc.wait(timeout=300) == 0
        for line in (head + out).splitlines():
            (errors if line.startswith("!") else acked).append(line)
    return acked, errors


def guess_at_once(members, limit):
    """Each member tries `limit` wrong PINs, all at the same time: with a limit shared by
    the group, exactly limit-1 are told "incorrect", the limit-th locks the PIN and every
    other attempt is refused untried; the right PIN is then locked everywhere."""
    replies = []

    def guess(member):
        for i in range(limit):
            replies.append(member.ask(f"login 9999{i}"))

    threads = [threading.Thread(target=guess, args=(m,)) for m in members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert replies.count("PinIncorrect") == limit - 1, replies
    assert replies.count("PinLocked") == len(members) * limit - (limit - 1), replies
    assert [m.ask(f"login {USER_PIN}") for m in members] == ["PinLocked"] * len(members)
