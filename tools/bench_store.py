"""`make bench-store`: the PostgreSQL store against the sqlite store, through the C ABI.

Both are the same libptkhsm.so (ptkhsm ctperf's driver), one with its token in
the data directory's sqlite, one with ET_PTKC_SW_STORE pointing at PostgreSQL;
they take turns in one run, each test --repeat times, the median counts. The
tests: object-create (durable create), find-sign (find a token key, sign),
p256-sign, find-10k (a find among 10,000 token objects, after filling the
token) and then init, the cold start, on the token holding those 10,000.
Goals (issue 24): find and sign within 1.2x of sqlite, create >= 1,000/s.

ExtToken is switched off (ET_PTKC_EXTTOKEN_ENABLE=0): slot 0 is the HSM's token, whose
objects are rows of the store under test.

Without --postgresql, a throwaway server is started as the tests do
(tests/pg/conftest.py: initdb in a temporary directory, unix socket only).

    python tools/bench_store.py [--postgresql URI] [--seconds 2] [--repeat 3] [--out FILE]
"""

import argparse
import datetime
import sys
from pathlib import Path

from ptkhsm import ctperf
from ptkhsm.cli import module_path

ROOT = Path(__file__).resolve().parent.parent
PAIRS = [("object-create", 1), ("find-sign", 1), ("p256-sign", 1), ("find-10k", 1), ("init", 1)]
# op -> minimum postgresql/sqlite ratio of ops/s (1/1.2: within 1.2x), or None
RATIO_GOALS = {"find-sign": 1 / 1.2, "p256-sign": 1 / 1.2, "find-10k": 1 / 1.2}
CREATE_GOAL = 1000.0


def _progress(done, total, result):
    status = f"{result.ops_per_s:.1f} ops/s" if result.ok else result.failure()
    print(f"bench-store [{done}/{total}] {result.target} {result.op}: {status}", file=sys.stderr, flush=True)


def _figure(result):
    if result is None or not result.ok:
        return "n/a" if result is None else f"n/a ({result.failure()})"
    if result.op == "init":
        return f"{result.median['elapsed_s'] * 1e3:.1f} ms"
    return f"{result.ops_per_s:,.1f}/s"


def report(results, args):
    lines = ["# The PostgreSQL store against sqlite", "",
             f"Written by `make bench-store` (tools/bench_store.py) on {datetime.date.today().isoformat()}; "
             f"{args.seconds:g} s per test, median of {args.repeat} runs (init: of {max(args.repeat, 5)} "
             f"fresh processes). Same module, same machine, the stores take turns.", "",
             "| test | what | sqlite | postgresql | postgresql / sqlite | goal | |", "|---|---|---:|---:|---:|---|---|"]
    for op, threads in PAIRS:
        lite, pg = results.get(("sqlite", op, threads)), results.get(("postgresql", op, threads))
        ratio = None
        if lite and pg and lite.ok and pg.ok:
            ratio = (lite.median["elapsed_s"] / pg.median["elapsed_s"] if op == "init"
                     else pg.ops_per_s / lite.ops_per_s)
        goal, met = "", ""
        if op in RATIO_GOALS:
            goal = "within 1.2x"
            met = "**met**" if ratio is not None and ratio >= RATIO_GOALS[op] else "**missed**"
        elif op == "object-create":
            goal = f">= {CREATE_GOAL:,.0f}/s"
            met = "**met**" if pg and pg.ok and pg.ops_per_s >= CREATE_GOAL else "**missed**"
        shown = "n/a" if ratio is None else f"{ratio:.2f}x"
        lines.append(f"| {op} | {ctperf.TESTS[op]} | {_figure(lite)} | {_figure(pg)} | {shown} | {goal} | {met} |")
    lines += ["", "init is the cold start (dlopen, C_Initialize, first token information) with the 10,000 "
              "objects of find-10k on the token; its ratio is sqlite time / postgresql time.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", default=module_path())
    parser.add_argument("--postgresql", help="libpq URI of an empty database (default: a throwaway server)")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)

    server = None
    uri = args.postgresql
    if uri is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from pg.conftest import PASSWORD, ROLE, Server
        server = Server()
        server.initdb()
        server.start()
        server.sql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
        uri = server.uri(server.new_database())
    lite = ctperf.Target(args.module, name="sqlite")
    pg = ctperf.Target(args.module, name="postgresql")
    pg.env["ET_PTKC_SW_STORE"] = uri
    for target in (lite, pg):
        # slot 0 is then the HSM's token, in the store: with ExtToken on, slot 0's objects
        # are host files, and the cold start's first C_GetTokenInfo (slot 0) would not read them
        target.env["ET_PTKC_EXTTOKEN_ENABLE"] = "0"
    try:
        results = ctperf.run_suite([lite, pg], PAIRS, args.seconds, args.repeat, max(args.repeat, 5), _progress)
    except ctperf.CtperfError as exc:
        print(f"bench-store: {exc}", file=sys.stderr)
        return 1
    finally:
        lite.close()
        pg.close()
        if server:
            server.stop("fast")
            server.remove()
    text = report(results, args)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
