"""ExtToken figures (issue 16), through the client interface in process (the stack
libptkhsm.so runs: HSM + ExtToken layer), on a data directory of its own:

- create objects/s on slot 0 (external: wrap + append + fsync) and slot 1 (the HSM's store);
- cold load: external keys unwrapped into the HSM per second (goal >= 10,000/s; the seed: 109/s);
- sign (AES-CMAC) with a loaded key at ET_PTKC_EXTTOKEN_MAXLOADED = 100, 10,000, 100,000
  with the cache full (goal: within +-25 % of each other);
- find one label among --objects objects (goal <= 1 ms), slot 0 and slot 1.

    python tools/bench_exttoken.py [--objects 100000] [--seconds 2] [--out docs/exttoken-performance.md]

Filling 100,000 objects per slot takes minutes (every create is fsynced).
"""

import argparse
import datetime
import gc
import os
import platform
import shutil
import sys
import tempfile
import time

from ptkhsm import constants as C
from ptkhsm.config import Config
from ptkhsm.cryptoki.client import Cryptoki
from ptkhsm.exttoken import stack
from ptkhsm.mechparams import Mechanism

SO_PIN, PIN = b"12345678", b"1234"
RW = C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION
CMAC = Mechanism(C.CKM_AES_CMAC)
COLD_LOADS = 10_000


def _library(datapath, **extra):
    env = {"ET_PTKC_SW_DATAPATH": datapath, "HOME": datapath, **extra}
    return stack(Cryptoki(Config(env)))


def ready_token(api, slot, label):
    """Initialise the token in `slot` and set the user PIN (tools/exttoken_profile.py too)."""
    api.init_token(slot, SO_PIN, label.ljust(32))
    s = api.open_session(slot, RW)
    api.login(s, C.CKU_SO, SO_PIN)
    api.init_pin(s, PIN)
    api.close_session(s)


def _session(api, slot):
    s = api.open_session(slot, RW)
    api.login(s, C.CKU_USER, PIN)
    return s


def _find(api, s, template):
    api.find_init(s, template)
    out = api.find(s, 1_000_000)
    api.find_final(s)
    return out


def _progress(done, total, what):
    if done % max(1, total // 100) == 0 or done == total:
        print(f"\r{what}: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)


def _fill(api, s, count, what):
    """count AES token keys labelled key<i> -> (handles, creates/s)."""
    handles = []
    start = time.perf_counter()
    for i in range(count):
        handles.append(api.create_object(s, [
            (C.CKA_CLASS, C.CKO_SECRET_KEY), (C.CKA_KEY_TYPE, C.CKK_AES), (C.CKA_TOKEN, True),
            (C.CKA_LABEL, b"key%d" % i), (C.CKA_VALUE, os.urandom(16)), (C.CKA_SIGN, True),
            (C.CKA_EXTRACTABLE, True)]))
        _progress(i + 1, count, what)
    return handles, count / (time.perf_counter() - start)


def _find_ms(api, s, count, rounds=1000):
    start = time.perf_counter()
    for i in range(rounds):
        assert len(_find(api, s, [(C.CKA_LABEL, b"key%d" % ((i * 7919) % count))])) == 1
    return (time.perf_counter() - start) / rounds * 1000


def _settle():
    """Start a timed row from the same state as the others -> (seconds of gc.collect(), of
    os.sync()), shown in the table, so that a row's figure does not carry the work left by
    what ran before it (the fill's 200,000 fsynced creates before the first row)."""
    start = time.perf_counter()
    gc.collect()
    collected = time.perf_counter()
    os.sync()
    return collected - start, time.perf_counter() - collected


def _sign_rate(api, s, handles, seconds):
    n, key = 0, handles[len(handles) // 2]
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(100):
            api.sign_init(s, CMAC, key)
            api.sign(s, b"x" * 64, 16)
        n += 100
    return n / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--out", help="write the results as markdown to this file")
    args = parser.parse_args(argv)
    datapath = tempfile.mkdtemp(prefix="ptkhsm-bench-ext-")
    rows = []
    try:
        lib = _library(datapath)
        api = lib.api
        for slot in (0, 1):
            ready_token(api, slot, b"bench")
        creates = {}
        for slot in (0, 1):
            s = _session(api, slot)
            handles, creates[slot] = _fill(api, s, args.objects, f"fill slot {slot}")
            rows.append((f"create, slot {slot}", f"{creates[slot]:,.0f} objects/s", ""))
            rows.append((f"find one label among {args.objects:,}, slot {slot}",
                         f"{_find_ms(api, s, args.objects):.3f} ms", "goal <= 1 ms" if slot == 0 else ""))
            api.close_session(s)
            if slot == 0:
                external = handles
        lib.finalize()

        for maxloaded in (100, 10_000, 100_000):
            lib = _library(datapath, ET_PTKC_EXTTOKEN_MAXLOADED=str(maxloaded))
            api = lib.api
            s = _session(api, 0)
            # At least COLD_LOADS first uses, past the cache bound if need be (each one then
            # evicts the least used): 100 loads are milliseconds, too short to time.
            first_uses = external[:max(maxloaded, COLD_LOADS)]
            settled = _settle()
            start, cpu = time.perf_counter(), time.process_time()
            for h in first_uses:                    # cold: every first use unwraps
                api.sign_init(s, CMAC, h)
                api.sign(s, b"x", 16)
            cold = len(first_uses) / (time.perf_counter() - start)
            cold_cpu = len(first_uses) / (time.process_time() - cpu)
            loaded = first_uses[-maxloaded:]        # the ones the cache holds now
            rate = _sign_rate(api, s, loaded, args.seconds)
            # CPU time too: on a shared machine the wall clock also counts the others' work.
            rows.append((f"cold load (first use of {len(first_uses):,}), MAXLOADED {maxloaded:,}",
                         f"{cold:,.0f} objects/s (CPU time: {cold_cpu:,.0f}/s; before it gc.collect() "
                         f"{settled[0]:.2f} s, os.sync() {settled[1]:.2f} s)",
                         "goal >= 10,000/s (seed: 109/s)"))
            rows.append((f"sign AES-CMAC, loaded key, MAXLOADED {maxloaded:,} ({api.loaded_count():,} loaded)",
                         f"{rate:,.0f} ops/s", "goal: within 25 % of each other"))
            # The HSM's find scans its session objects, the loaded copies among them.
            rows.append((f"find one label, slot 0, {api.loaded_count():,} loaded",
                         f"{_find_ms(api, s, len(external), rounds=200):.3f} ms", ""))
            lib.finalize()
    finally:
        shutil.rmtree(datapath, ignore_errors=True)
    table = ["| measure | result | goal |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    head = (f"# ExtToken performance\n\nWritten by `python tools/bench_exttoken.py --objects {args.objects}` "
            f"on {datetime.date.today()} ({platform.python_implementation()} {platform.python_version()}, "
            f"{os.cpu_count()} CPUs).\n")
    text = head + "\n" + "\n".join(table) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
