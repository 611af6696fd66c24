"""The same operations in process, over TCP and over a unix socket to `ptkhsm serve`
(issue 15's goals): written to docs/performance-network.md. `tools/bench.py --network`
runs it; `make bench-network` too.

    python tools/bench_network.py [--module LIB] [--seconds 2] [--repeat 3] [--workers 2]

Goals: a trivial call's round trip (C_GenerateRandom of 32 bytes: ms/op of random32)
<= 100 us over TCP loopback, <= 50 us over the unix socket; 8 client threads signing
P-256 through the server >= 1.0x in process.
"""

import argparse
import datetime
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from ptkhsm import ctperf
from ptkhsm.cli import module_path

OPS = [("random32", 1), ("session", 1), ("sha256-64", 1), ("getattr", 1), ("aes-cbc-1k", 1),
       ("hmac-sha256-64", 1), ("p256-sign", 1), ("p256-sign", 8), ("rsa2048-sign", 1), ("rsa2048-sign", 8),
       ("find-sign", 1), ("find-sign", 8)]
ROUND_TRIP_GOALS_US = {"tcp": 100.0, "unix": 50.0}
SCALING_GOAL = 1.0


class Server:
    """`ptkhsm serve` on a loopback port or a unix socket, on `data` (default: a fresh directory)."""

    def __init__(self, transport, workers, data=None):
        self.tmp = tempfile.mkdtemp(prefix=f"bench-{transport}-")
        data = data or os.path.join(self.tmp, "data")
        env = dict(os.environ, ET_PTKC_SW_DATAPATH=data, PTKHSM_LOG_LEVEL="WARNING")
        env.pop("ET_HSM_NETCLIENT_SERVERLIST", None)
        where = ["--unix", os.path.join(self.tmp, "hsm.sock")] if transport == "unix" else ["--listen",
                                                                                          "127.0.0.1:0"]
        ptkhsm = str(Path(sys.executable).parent / "ptkhsm")
        self.proc = subprocess.Popen([ptkhsm, "serve", *where, "--workers", str(workers)], env=env,
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        match = re.search(r"ready on (?:tcp|unix) (\S+)", line)
        if not match:
            self.stop()
            raise SystemExit(f"bench: ptkhsm serve did not start: {line!r}")
        self.address = match.group(1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)


def report(results, names, args):
    get = lambda who, op, n: results.get((who, op, n))  # noqa: E731
    lines = ["# Performance: in process, over TCP and over a unix socket", "",
             f"Written by `tools/bench_network.py` on {datetime.date.today().isoformat()}; do not edit by hand.",
             f"ctperf-driver (C) against the same libptkhsm.so: embedded, then pointed at `ptkhsm serve "
             f"--workers {args.workers}` over TCP loopback and over a unix socket "
             f"(ET_HSM_NETCLIENT_SERVERLIST). {args.seconds:g} s per test, median of {args.repeat}.", "",
             "| test | threads | " + " | ".join(f"{n} ops/s" for n in names) + " | tcp / in-process | "
             "unix / in-process |", "|---|---:|" + "---:|" * (len(names) + 2)]
    for op, n in OPS:
        cells = [ctperf.ratio(results, who, names[0], op, n) for who in names[1:]]
        lines.append(f"| {op} | {n} | " + " | ".join(
            f"{get(who, op, n).ops_per_s:,.0f}" if get(who, op, n) and get(who, op, n).ok else "n/a"
            for who in names) + " | " + " | ".join(f"{c:.2f}x" if c else "n/a" for c in cells) + " |")
    lines += ["", "## Goals", "", "| goal | measured | |", "|---|---|---|"]
    for who, goal in ROUND_TRIP_GOALS_US.items():
        r = get(who, "random32", 1)
        us = 1e6 / r.ops_per_s if r and r.ok else None
        lines.append(f"| trivial call round trip over {who} <= {goal:g} us | "
                     f"{'n/a' if us is None else f'{us:.1f} us'} | "
                     f"{'**met**' if us is not None and us <= goal else '**missed**'} |")
    for who in names[1:]:
        r = ctperf.ratio(results, who, names[0], "p256-sign", 8)
        lines.append(f"| 8 threads P-256 sign over {who} / in process >= {SCALING_GOAL:g}x | "
                     f"{'n/a' if r is None else f'{r:.2f}x'} | {'**met**' if r and r >= SCALING_GOAL else '**missed**'} |")
    return "\n".join(lines) + "\n"


def arguments(argv, doc, out):
    """The options the server benches share (this one and tools/bench_sms.py)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--module", default=module_path())
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--out", default=out)
    return parser.parse_args(argv)


def main(argv=None):
    args = arguments(argv, __doc__, "docs/performance-network.md")
    servers = {t: Server(t, args.workers) for t in ("tcp", "unix")}
    targets = [ctperf.Target(args.module, name="in-process")]
    for transport, server in servers.items():
        target = ctperf.Target(args.module, name=transport)
        target.env["ET_HSM_NETCLIENT_SERVERLIST"] = server.address
        targets.append(target)
    try:
        results = ctperf.run_suite(targets, OPS, args.seconds, args.repeat, 1,
                                   lambda d, t, r: print(f"bench-network [{d}/{t}] {r.target} "
                                                         f"{ctperf.test_name(r.op, r.threads)}: "
                                                         f"{r.ops_per_s:.1f} ops/s" if r.ok else r.failure(),
                                                         file=sys.stderr, flush=True))
    finally:
        for target in targets:
            target.close()
        for server in servers.values():
            server.stop()
    Path(args.out).write_text(report(results, [t.name for t in targets], args))
    print(f"bench-network: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
