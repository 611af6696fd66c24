"""Soak: mixed operations from many threads through the real libptkhsm.so.

    python soak.py MODULE --seconds S --threads T [--json]

Loads the module with python-pkcs11 (the module shares this interpreter, so
tracemalloc sees the HSM's allocations too). Each round: open a session,
generate an AES key, encrypt 1 KiB, create a token object, find it, read it,
destroy it, close the session. Memory is sampled after a warm-up; the slope
(bytes kept per round, least squares over the samples) is reported for the
Python heap (tracemalloc) and for RSS. At the end the token must show no
session and hold exactly the objects it held before.

The token in slot 0 must be initialised with user PIN 1234 (the caller does it
with pkcs11-tool).
"""

import argparse
import array
import ctypes
import gc
import json
import os
import sys
import threading
import time
import tracemalloc

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

PIN = "1234"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def slope(points):
    """Least-squares slope of (x, y) points."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


class Soak:
    def __init__(self, token, threads):
        self.token = token
        self.threads = threads
        self.rounds = 0
        self.errors = []
        self.stop = threading.Event()
        self._count = threading.Lock()

    def round(self, n):
        with self.token.open(rw=True) as session:
            key = session.generate_key(KeyType.AES, 256)
            iv = session.generate_random(128)
            data = os.urandom(1024)
            ciphertext = key.encrypt(data, mechanism_param=iv)
            if key.decrypt(ciphertext, mechanism_param=iv) != data:
                raise AssertionError("AES round trip differs")
            label = f"soak-{threading.get_ident()}-{n}"
            obj = session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True,
                                         Attribute.PRIVATE: n % 2 == 0, Attribute.LABEL: label,
                                         Attribute.VALUE: data[:64]})
            found = list(session.get_objects({Attribute.LABEL: label}))
            if len(found) != 1 or found[0][Attribute.VALUE] != data[:64]:
                raise AssertionError(f"find {label}: {len(found)} objects")
            obj.destroy()
            key.destroy()

    def worker(self):
        n = 0
        while not self.stop.is_set():
            try:
                self.round(n)
            except Exception as exc:  # every error is a finding: keep it and go on
                self.errors.append(f"{type(exc).__name__}: {exc}")
                if len(self.errors) > 20:
                    self.stop.set()
            n += 1
            with self._count:
                self.rounds += 1

    def run(self, seconds, warmup, top=0):
        workers = [threading.Thread(target=self.worker, daemon=True) for _ in range(self.threads)]
        start = time.monotonic()
        for worker in workers:
            worker.start()
        # room for every sample made beforehand: a growing list would be the slope it measures
        room = int((seconds - warmup) / 0.25) + 8
        taken = array.array("q", bytes(8 * 3 * room))
        count = 0
        while time.monotonic() - start < seconds and not self.stop.is_set():
            time.sleep(0.25)
            if time.monotonic() - start >= warmup:
                if top and not count:
                    self.snapshot = tracemalloc.take_snapshot()
                gc.collect()  # garbage waiting for the collector is not a leak
                if count < room:
                    base = 3 * count
                    taken[base], taken[base + 1], taken[base + 2] = (
                        self.rounds, tracemalloc.get_traced_memory()[0], rss())
                    count += 1
        self.stop.set()
        for worker in workers:
            worker.join(60)
        if top:
            grown = tracemalloc.take_snapshot().compare_to(self.snapshot, "traceback")[:top]
            for stat in grown:
                print(stat.size_diff, stat.count_diff, *stat.traceback.format()[-8:], sep="\n  ", file=sys.stderr)
        samples = [tuple(taken[3 * i:3 * i + 3]) for i in range(count)]
        return samples, time.monotonic() - start


def count_objects(token):
    with token.open(user_pin=PIN) as session:
        return len(list(session.get_objects()))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("module")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--top", type=int, default=0,
                        help="print the N allocation sites that grew most after the warm-up (diagnosis)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before sampling (default: a quarter)")
    args = parser.parse_args()
    warmup = args.seconds / 4 if args.warmup is None else args.warmup

    tracemalloc.start(8 if args.top else 1)
    lib = pkcs11.lib(args.module)
    token = next(lib.get_tokens())
    objects_before = count_objects(token)
    anchor = token.open(rw=True, user_pin=PIN)  # login state is per token: one login for all threads
    soak = Soak(token, args.threads)
    samples, elapsed = soak.run(args.seconds, warmup, args.top)
    anchor.close()
    report = {
        "threads": args.threads, "seconds": round(elapsed, 1), "rounds": soak.rounds,
        "rounds_per_second": round(soak.rounds / elapsed, 1), "errors": soak.errors[:20],
        "error_count": len(soak.errors), "samples": len(samples),
        "heap_slope_bytes_per_round": round(slope([(r, h) for r, h, _ in samples]), 2),
        "rss_slope_bytes_per_round": round(slope([(r, m) for r, _, m in samples]), 2),
        "heap_first_last": [samples[0][1], samples[-1][1]] if samples else None,
        "rss_first_last": [samples[0][2], samples[-1][2]] if samples else None,
        "sessions_left": session_count(args.module, token.slot.slot_id),
        "objects_before": objects_before, "objects_after": count_objects(token),
    }
    print(json.dumps(report))
    return 0


def session_count(module, slot):
    """CK_TOKEN_INFO.ulSessionCount, read afresh (python-pkcs11 does not show it). ctypes
    reaches the same, already initialised module: dlopen gives the loaded library."""
    info = ctypes.create_string_buffer(256)
    rv = ctypes.CDLL(module).C_GetTokenInfo(ctypes.c_ulong(slot), info)
    if rv:
        raise RuntimeError(f"C_GetTokenInfo: {rv:#x}")
    return ctypes.c_ulong.from_buffer(info, 112).value  # after 96 bytes of strings, flags, max


if __name__ == "__main__":
    sys.exit(main())
