"""The cost of Secure Messaging (issue 17's goals), in process and over TCP: written to
docs/performance-sms.md. `make bench-sms` runs it.

    python tools/bench_sms.py [--module LIB] [--seconds 2] [--repeat 3] [--workers 2]

For each transport, three HSMs: SMS off (no flag), signing only (Auth protection + Full
secure message signing) and full (all four SMS flags: encryption and signing both ways).
Goals: full SMS costs <= 30 % of RSA-2048 sign's ops/s, <= 50 % of AES-CBC 1 KiB's and of
a trivial call's (C_GenerateRandom of 32 bytes), against SMS off on the same transport.

The floor: the AES-256-CTR and HMAC-SHA-512 calls that full SMS makes for one test's
records (each call's request and reply, sealed by one side and opened by the other), timed
in a bare loop with `cryptography`. Added to the in-process off call, it is the least full
SMS can cost there, whatever the code around the primitives does.
"""

import datetime
import hmac
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hmac import HMAC

from ptkhsm import constants as C
from ptkhsm import ctperf
from ptkhsm import mechparams as P
from ptkhsm import wire
from ptkhsm.config import Config
from ptkhsm.hsm.core import HSM
from ptkhsm.sms import channel as ch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_network import Server, arguments  # noqa: E402  (tools/ is not a package)

OPS = [("rsa2048-sign", 1), ("aes-cbc-1k", 1), ("random32", 1)]
MODES = {"off": 0,
         "signing": C.CKF_AUTH_PROTECTION | C.CKF_FULL_SMS_SIGN,
         "full": C.CKF_NO_CLEAR_PINS | C.CKF_AUTH_PROTECTION | C.CKF_FULL_SMS_ENC | C.CKF_FULL_SMS_SIGN}
GOALS = {"rsa2048-sign": 0.30, "aes-cbc-1k": 0.50, "random32": 0.50}   # highest cost of full SMS
SO, PIN = b"12345678", b"1234"
RW = C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION
# The calls of one test as ctperf-driver makes them: (name, arguments, reply value). Handles
# cross as 8-byte ulongs whatever their value, so these records have the real sizes.
CALLS = {
    "rsa2048-sign": [("sign_init", (1, P.Mechanism(C.CKM_SHA256_RSA_PKCS, None), 2), None),
                     ("sign", (1, bytes(32), 256), bytes(256))],
    "aes-cbc-1k": [("encrypt_init", (1, P.Mechanism(C.CKM_AES_CBC, bytes(16)), 2), None),
                   ("encrypt", (1, bytes(1024), 1024), bytes(1024))],
    "random32": [("generate_random", (1, 32), bytes(32))],
}


def record_sizes(op):
    """The payload sizes of a test's DATA records, requests and replies (smslink.py: a
    request carries the reply protection byte and the REQUEST frame after its length)."""
    sizes = []
    for name, args, value in CALLS[op]:
        sizes.append(1 + len(wire.request(1, name, args)) - 4)
        sizes.append(len(wire.reply(1, value)) - 4)
    return sizes


def _primitives(sizes):
    """One test's full-SMS cryptography, bare: per record the sender's AES-CTR and HMAC, the
    receiver's HMAC, compare and AES-CTR, on buffers of the records' sizes."""
    suite = ch.Suite(ch.ADH2)
    keystream = lambda: Cipher(algorithms.AES256(bytes(32)), modes.CTR(bytes(16))).encryptor().update  # noqa: E731
    seal_ctr, open_ctr = keystream(), keystream()
    mac = HMAC(bytes(suite.mac_len), suite.hash())
    records = [(bytes(n), bytes(ch.HEADER_SIZE + n)) for n in sizes]   # payload, header + body

    def one_op():
        for payload, signed in records:
            seal_ctr(payload)
            h = mac.copy()
            h.update(signed)
            tag = h.finalize()[:suite.tag_len]
            h = mac.copy()
            h.update(signed)
            hmac.compare_digest(tag, h.finalize()[:suite.tag_len])
            open_ctr(payload)
    return one_op


def floor_seconds(op, seconds, repeat):
    """-> seconds per op of the primitives alone (median of `repeat` runs)."""
    one_op = _primitives(record_sizes(op))
    runs = []
    for _ in range(repeat):
        n, start = 0, time.perf_counter()
        stop = start + seconds
        while time.perf_counter() < stop:
            for _ in range(100):
                one_op()
            n += 100
        runs.append((time.perf_counter() - start) / n)
    return statistics.median(runs)


def hsm_with_flags(path, flags):
    """A data directory whose HSM has these flags and slot 0's token ctperf uses."""
    env = {"ET_PTKC_SW_DATAPATH": path, "HOME": os.environ.get("HOME", path)}
    app = HSM(Config(env)).application()
    admin = app.slot_list()[-1]
    app.init_token(admin, SO, b"")
    s = app.open_session(admin, RW)
    app.login(s, C.CKU_SO, SO)
    app.find_init(s, [(C.CKA_CLASS, C.CKO_ADAPTER)])
    (adapter,) = app.find(s, 2)
    app.find_final(s)
    app.set_attributes(s, adapter, [(C.CKA_SECURITY_MODE, flags)])
    app.init_token(0, SO, ctperf.TOKEN_LABEL.encode().ljust(32))
    s = app.open_session(0, RW)
    app.login(s, C.CKU_SO, SO)
    app.init_pin(s, PIN)
    app.finalize()


def floor_rows(results, floors):
    """The in-process floor of each test: its off call plus the bare primitives of full SMS."""
    rows = ["| test | off µs/op | primitives µs/op | floor: least full SMS cost | full SMS cost | goal |",
            "|---|---:|---:|---:|---:|---:|"]
    for op, _ in OPS:
        off = results.get(("in-process off", op, 1))
        full = ctperf.ratio(results, "in-process full", "in-process off", op, 1)
        if off is None or not off.ok or not off.ops_per_s:
            rows.append(f"| {op} | n/a | {floors[op] * 1e6:.2f} | n/a | n/a | {GOALS[op]:.0%} |")
            continue
        off_s = 1 / off.ops_per_s
        rows.append(f"| {op} | {off_s * 1e6:.2f} | {floors[op] * 1e6:.2f} | "
                    f"{floors[op] / (off_s + floors[op]):.0%} | {'n/a' if full is None else f'{1 - full:.0%}'} | "
                    f"{GOALS[op]:.0%} |")
    return rows


def report(results, floors, args):
    get = lambda name, op: results.get((name, op, 1))  # noqa: E731
    lines = ["# Performance of Secure Messaging", "",
             f"Written by `tools/bench_sms.py` on {datetime.date.today().isoformat()}; do not edit by hand. "
             f"ctperf-driver (C) against libptkhsm.so; {args.seconds:g} s per test, median of {args.repeat}; "
             f"`ptkhsm serve --workers {args.workers}` on TCP loopback. off: no flag; signing: Auth protection "
             f"+ Full SMS signing; full: the four SMS flags.", "",
             "| test | transport | off ops/s | signing ops/s | full ops/s | signing / off | full / off |",
             "|---|---|---:|---:|---:|---:|---:|"]
    verdicts = []
    for op, _ in OPS:
        for transport in ("in-process", "tcp"):
            row = [get(f"{transport} {mode}", op) for mode in MODES]
            cells = [f"{r.ops_per_s:,.0f}" if r and r.ok else "n/a" for r in row]
            ratios = [ctperf.ratio(results, f"{transport} {m}", f"{transport} off", op, 1) for m in ("signing", "full")]
            lines.append(f"| {op} | {transport} | " + " | ".join(cells) + " | "
                         + " | ".join(f"{x:.2f}x" if x else "n/a" for x in ratios) + " |")
            full = ratios[1]
            verdicts.append(f"| full SMS costs <= {GOALS[op]:.0%} on {op} ({transport}) | "
                            f"{'n/a' if full is None else f'{1 - full:.0%}'} | "
                            f"{'**met**' if full is not None and 1 - full <= GOALS[op] else '**missed**'} |")
    lines += ["", "## Goals", "", "| goal | measured cost | |", "|---|---|---|", *verdicts]
    lines += ["", "## The floor in process", "",
              f"primitives: the AES-256-CTR and HMAC-SHA-512 calls that full SMS makes for one op's records "
              f"(each call's request and reply: the sender encrypts and MACs, the receiver MACs, compares and "
              f"decrypts), timed in a bare Python loop with `cryptography` ({args.seconds:g} s, median of "
              f"{args.repeat}). floor = primitives / (off + primitives): what full SMS would cost in process "
              f"if everything but those calls were free. A goal below the floor cannot be met with these "
              f"primitives.", "", *floor_rows(results, floors)]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = arguments(argv, __doc__, "docs/performance-sms.md")
    tmp = tempfile.mkdtemp(prefix="bench-sms-")
    targets, servers = [], []
    try:
        for mode, flags in MODES.items():
            for transport in ("in-process", "tcp"):
                data = os.path.join(tmp, f"{transport}-{mode}")
                hsm_with_flags(data, flags)
                target = ctperf.Target(args.module, name=f"{transport} {mode}", existing=True, slot=0,
                                       pin=PIN.decode())
                target.env["ET_PTKC_SW_DATAPATH"] = data
                target.env.pop("ET_HSM_NETCLIENT_SERVERLIST", None)
                if transport == "tcp":
                    servers.append(Server("tcp", args.workers, data))
                    target.env["ET_HSM_NETCLIENT_SERVERLIST"] = servers[-1].address
                targets.append(target)
        results = ctperf.run_suite(targets, OPS, args.seconds, args.repeat, 1,
                                   lambda d, t, r: print(f"bench-sms [{d}/{t}] {r.target} {r.op}: "
                                                         f"{r.ops_per_s:.1f} ops/s" if r.ok else r.failure(),
                                                         file=sys.stderr, flush=True))
    finally:
        for target in targets:
            target.close()
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    floors = {op: floor_seconds(op, args.seconds, args.repeat) for op, _ in OPS}
    Path(args.out).write_text(report(results, floors, args))
    print(f"bench-sms: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
