"""The cost of Secure Messaging (issue 17's goals), in process and over TCP: written to
docs/performance-sms.md. `make bench-sms` runs it.

    python tools/bench_sms.py [--module LIB] [--seconds 2] [--repeat 3] [--workers 2]

For each transport, three HSMs: SMS off (no flag), signing only (Auth protection + Full
secure message signing) and full (all four SMS flags: encryption and signing both ways).
Goals: full SMS costs <= 30 % of RSA-2048 sign's ops/s, <= 50 % of AES-CBC 1 KiB's and of
a trivial call's (C_GenerateRandom of 32 bytes), against SMS off on the same transport.
"""

import argparse
import datetime
import os
import sys
import tempfile
from pathlib import Path

from ptkhsm import constants as C
from ptkhsm import ctperf
from ptkhsm.cli import module_path
from ptkhsm.config import Config
from ptkhsm.hsm.core import HSM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_network import Server  # noqa: E402  (tools/ is not a package)

OPS = [("rsa2048-sign", 1), ("aes-cbc-1k", 1), ("random32", 1)]
MODES = {"off": 0,
         "signing": C.CKF_AUTH_PROTECTION | C.CKF_FULL_SMS_SIGN,
         "full": C.CKF_NO_CLEAR_PINS | C.CKF_AUTH_PROTECTION | C.CKF_FULL_SMS_ENC | C.CKF_FULL_SMS_SIGN}
GOALS = {"rsa2048-sign": 0.30, "aes-cbc-1k": 0.50, "random32": 0.50}   # highest cost of full SMS
SO, PIN = b"12345678", b"1234"
RW = C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION


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


def report(results, args):
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
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", default=module_path())
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--out", default="docs/performance-sms.md")
    args = parser.parse_args(argv)
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
    Path(args.out).write_text(report(results, args))
    print(f"bench-sms: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
