"""The GIL's floor for short operations: the same work in a bare Python loop.

Signs a 32-byte digest with ECDSA P-256 (or another of the short operations)
through `cryptography` directly, on 1, 2 and 8 Python threads, and prints
signatures per second: what any Python-hosted engine, ptkhsm's included, can
get from more threads in one process. `make bench` reports it beside ptkhsm's
own threaded figures (docs/performance.md).

    python tools/gil_floor.py [--seconds 2] [--threads 1,2,8]
"""

import argparse
import hmac
import os
import threading
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils


def _work():
    p256 = ec.generate_private_key(ec.SECP256R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    prehashed = ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    digest, key, data = os.urandom(32), os.urandom(32), os.urandom(64)
    return {
        "p256-sign": lambda: p256.sign(digest, prehashed),
        "ed25519-sign": lambda: ed.sign(digest),
        "hmac-sha256-64": lambda: hmac.digest(key, data, "sha256"),
    }


def measure(fn, threads, seconds):
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def loop(i):
        n = 0
        while time.perf_counter() < stop:
            fn()
            n += 1
        counts[i] = n
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - start)


def run(seconds, thread_counts):
    """-> {(op, threads): ops/s}"""
    return {(op, n): measure(fn, n, seconds) for op, fn in _work().items() for n in thread_counts}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", default="1,2,8")
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.threads.split(",")]
    for (op, n), rate in run(args.seconds, counts).items():
        print(f"{op} x{n}: {rate:,.0f} ops/s")


if __name__ == "__main__":
    main()
