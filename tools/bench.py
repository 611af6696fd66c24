"""`make bench-core` (part of `make bench`): ptkhsm against SoftHSMv2 through the C ABI, written to docs/performance.md.

Runs `ptkhsm ctperf`'s suite on both modules in the same run (the modules
take turns, each test --repeat times, the median counts), then ptkhsm alone
for the find across 100,000 token objects and the RSS it leaves. The goals
are those of issue 9: a ratio is ptkhsm ops/s divided by SoftHSMv2 ops/s.

    python tools/bench.py [--module LIB] [--seconds 2] [--repeat 3] [--out docs/performance.md]
"""

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

from ptkhsm import __version__, ctperf
from ptkhsm.cli import module_path
from ptkhsm.svgchart import ratio_chart

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gil_floor  # noqa: E402  (tools/ is not a package)

# (op, threads, minimum ratio ptkhsm / SoftHSMv2)
RATIO_GOALS = [
    ("rsa2048-sign", 1, 1.0), ("aes-gcm-1m", 1, 1.0),
    ("p256-sign", 1, 0.8), ("ed25519-sign", 1, 0.8), ("hmac-sha256-64", 1, 0.8), ("aes-cbc-1k", 1, 0.8),
    ("random32", 1, 0.5), ("sha256-64", 1, 0.5), ("session", 1, 0.5), ("getattr", 1, 0.5),
    ("object-create", 1, 5.0), ("find-10k", 1, 100.0),
]
SCALING_OP, SCALING_GOAL = "rsa2048-sign", 1.7      # ptkhsm at 2 threads / 1 thread
INIT_GOAL_MS = 100.0
RSS_GOAL_MB = 300.0
# also at 2 and 8 threads: the long operation (RSA) and every short one
THREADED_OPS = ("rsa2048-sign", "p256-sign", "ed25519-sign", "hmac-sha256-64", "aes-gcm-4k", "find-sign", "getattr")
THREADS = (1, 2, 8)
# Issue 18: more threads never make a short operation slower, and 8 threads keep up with SoftHSMv2's 8.
SHORT_OPS = tuple(op for op in THREADED_OPS if op != SCALING_OP)


def suite_plan(with_100k):
    pairs = []
    for op, threads in ctperf.plan(ctperf.DEFAULT_OPS, [1]):
        pairs.append((op, threads))
        if op in THREADED_OPS:
            pairs += [(op, n) for n in THREADS if n != 1]
    if with_100k:
        pairs.append(("find-100k", 1))
    return pairs


def _progress(done, total, result):
    status = f"{result.ops_per_s:.1f} ops/s" if result.ok else result.failure()
    print(f"bench [{done}/{total}] {result.target} {ctperf.test_name(result.op, result.threads)}: {status}",
          file=sys.stderr, flush=True)


def _machine():
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        softhsm = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "softhsm2"],
                                 capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        softhsm = "?"
    return (f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Python {platform.python_version()}, "
            f"ptkhsm {__version__}, SoftHSMv2 {softhsm} (Debian package)")


def _fmt(value, digits=1):
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _ms(result):
    if result is None:
        return "not run"
    return f"{result.median['ms_per_op']:.4f}" if result.ok else "n/a"


def _cell(result):
    if result is None:
        return "not run"
    return _fmt(result.ops_per_s) if result.ok else f"n/a ({result.as_dict().get('ckr', result.failure())})"


def _verdict(ok):
    return "**met**" if ok else "**missed**"


def report(results, a, b, pairs, args, rss, floor):
    get = lambda op, n=1, who=a: results.get((who, op, n))  # noqa: E731
    lines = [
        "# Performance: ptkhsm and SoftHSMv2 through the C ABI",
        "",
        f"Written by `make bench-core` (tools/bench.py) on {datetime.date.today().isoformat()}; do not edit by hand.",
        f"Machine: {_machine()}.",
        "",
        f"Every figure comes from `ctperf-driver` (ctperf/driver.c), a C program that dlopens the module and "
        f"times each call; both modules ran in the same run, taking turns (and so did the thread counts of "
        f"one test), {args.seconds:g} s per test, {args.repeat} runs per test and the median run counts "
        f"(the cold start: median of "
        f"{max(args.repeat, 5)} fresh processes). Each module had a fresh token; keys are session objects "
        f"except where the test is about token objects. Ratio = ptkhsm ops/s / SoftHSMv2 ops/s, higher is "
        f"better for ptkhsm. The machine is shared: expect a few percent of noise, more for sub-microsecond "
        f"operations.",
        "",
        "![ptkhsm / SoftHSMv2](performance.svg)",
        "",
        "## The goals",
        "",
        "| test | what | ptkhsm ops/s | SoftHSMv2 ops/s | ratio | goal | |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for op, threads, goal in RATIO_GOALS:
        r = ctperf.ratio(results, a, b, op, threads)
        lines.append(f"| {op} | {ctperf.TESTS[op]} | {_cell(get(op, threads))} | {_cell(get(op, threads, b))} "
                     f"| {_fmt(r, 2) + 'x' if r else 'n/a'} | >= {goal:g}x | {_verdict(r is not None and r >= goal)} |")
    one, two = get(SCALING_OP, 1), get(SCALING_OP, 2)
    scaling = two.ops_per_s / one.ops_per_s if one and two and one.ok and two.ok else None
    b1, b2 = get(SCALING_OP, 1, b), get(SCALING_OP, 2, b)
    control = b2.ops_per_s / b1.ops_per_s if b1 and b2 and b1.ok and b2.ok else None
    lines.append(f"| {SCALING_OP} x2 / x1 | ptkhsm signing on 2 threads vs 1 | x2: {_cell(two)}, x1: {_cell(one)} "
                 f"| control, SoftHSMv2 x2 / x1: {_fmt(control, 2)}x"
                 f"{' (the run did not have 2 free cores)' if control is not None and control < 1.6 else ''} "
                 f"| {_fmt(scaling, 2) + 'x' if scaling else 'n/a'} | >= {SCALING_GOAL:g}x "
                 f"| {_verdict(scaling is not None and scaling >= SCALING_GOAL)} |")
    init_a, init_b = get("init"), get("init", 1, b)
    ms_a = init_a.median["elapsed_s"] * 1e3 if init_a and init_a.ok else None
    ms_b = init_b.median["elapsed_s"] * 1e3 if init_b and init_b.ok else None
    lines.append(f"| init | {ctperf.TESTS['init']} | {_fmt(ms_a, 1)} ms | {_fmt(ms_b, 1)} ms | | "
                 f"<= {INIT_GOAL_MS:g} ms | {_verdict(ms_a is not None and ms_a <= INIT_GOAL_MS)} |")
    if rss:
        hwm = rss.median["vmhwm_kb"] / 1024 if rss.ok else None
        lines.append(f"| RSS after find-100k | peak RSS (VmHWM) of the process after finds among 100,000 "
                     f"token objects | {_fmt(hwm, 1)} MB | | | <= {RSS_GOAL_MB:g} MB "
                     f"| {_verdict(hwm is not None and hwm <= RSS_GOAL_MB)} |")

    lines += ["", "## Threads", "",
              "Short operations on 2 and 8 threads against the same operation on 1 (goal >= 1.0x each), and "
              "ptkhsm's 8 threads against SoftHSMv2's 8 (goal >= 1.0x).", "",
              "| test | x1 ops/s | x2 ops/s | x8 ops/s | x2 / x1 | x8 / x1 | SoftHSMv2 x8 ops/s | x8 vs SoftHSMv2 x8 | |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for op in SHORT_OPS:
        one, two, eight, theirs = get(op, 1), get(op, 2), get(op, 8), get(op, 8, b)
        per = lambda r: r.ops_per_s / one.ops_per_s if r and r.ok and one and one.ok else None  # noqa: E731
        versus = eight.ops_per_s / theirs.ops_per_s if eight and eight.ok and theirs and theirs.ok else None
        met = all(x is not None and x >= 1.0 for x in (per(two), per(eight), versus))
        lines.append(f"| {op} | {_cell(one)} | {_cell(two)} | {_cell(eight)} | {_fmt(per(two), 2)}x "
                     f"| {_fmt(per(eight), 2)}x | {_cell(theirs)} | {_fmt(versus, 2)}x | {_verdict(met)} |")
    lines += ["", "The same work in a bare Python loop calling `cryptography` on 1, 2 and 8 threads "
              "(tools/gil_floor.py, same run): what threads give any engine that runs in one Python process.", "",
              "| operation | x1 ops/s | x2 ops/s | x8 ops/s | x2 / x1 | x8 / x1 |", "|---|---:|---:|---:|---:|---:|"]
    for op in sorted({op for op, _ in floor}):
        one, two, eight = (floor.get((op, n)) for n in THREADS)
        lines.append(f"| {op} | {_fmt(one)} | {_fmt(two)} | {_fmt(eight)} | {_fmt(two / one, 2)}x "
                     f"| {_fmt(eight / one, 2)}x |")

    lines += ["", "## Every test", "",
              "ms/op is 1000 / ops/s over all threads; p50/p99 are single-call latencies of the median run.", "",
              "| test | threads | ptkhsm ops/s | ptkhsm ms/op | ptkhsm p50 / p99 ms | SoftHSMv2 ops/s "
              "| SoftHSMv2 ms/op | SoftHSMv2 p50 / p99 ms | ratio |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for op, threads in pairs:
        ra, rb = get(op, threads), get(op, threads, b)
        lat = [f"{r.median['p50_ms']:.4f} / {r.median['p99_ms']:.4f}" if r and r.ok else "" for r in (ra, rb)]
        r = ctperf.ratio(results, a, b, op, threads)
        lines.append(f"| {op} | {threads} | {_cell(ra)} | {_ms(ra)} | {lat[0]} | {_cell(rb)} | {_ms(rb)} "
                     f"| {lat[1]} | {_fmt(r, 2) + 'x' if r else 'n/a'} |")

    lines += ["", "## Cold start", "",
              "Time from dlopen to the first C_GetSlotList/C_GetTokenInfo result in a fresh process.", "",
              "| module | dlopen ms | C_Initialize ms | first result ms |", "|---|---:|---:|---:|"]
    for who, res in ((a, init_a), (b, init_b)):
        if res and res.ok:
            m = res.median
            lines.append(f"| {who} | {m['dlopen_ms']:.1f} | {m['initialize_ms']:.1f} | {m['first_result_ms']:.1f} |")

    lines += ["", "## Filling the token for the find tests", "",
              "C_CreateObject of public token data objects, one call each, before the timed finds.", "",
              "| test | module | objects added | fill s |", "|---|---|---:|---:|"]
    for op in ("find-1k", "find-10k", "find-100k"):
        for who in (a, b):
            res = get(op, 1, who)
            if res and res.ok:
                d = res.as_dict()
                added = max(run.get("filled", 0) for run in res.runs)
                lines.append(f"| {op} | {who} | {added:,} | {d['fill_s']:.1f} |")
    if rss and rss.ok:
        m = rss.median
        lines += ["", "## Memory", "",
                  f"After {m['ops']:,} finds among {m['objects']:,} token objects (find-100k, ptkhsm, "
                  f"{m['ops_per_s']:,.1f} finds/s): VmHWM {m['vmhwm_kb'] / 1024:.1f} MB, "
                  f"VmRSS {m['vmrss_kb'] / 1024:.1f} MB of the ctperf-driver process, which embeds the "
                  f"whole ptkhsm (Python interpreter, cryptography, the token objects)."]
    lines += ["", "## Reproduce", "",
              "    make bench-core                              # BENCH_SECONDS=2 BENCH_REPEAT=3",
              "    ptkhsm ctperf --compare /usr/lib/softhsm/libsofthsm2.so --threads 1,2,8 --plot out.svg",
              ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", default=module_path(), help="libptkhsm.so (default: the installed one)")
    parser.add_argument("--compare", default=ctperf.SOFTHSM)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare-find-100k", action="store_true",
                        help="also fill SoftHSMv2 with 100,000 objects (takes many minutes)")
    parser.add_argument("--out", default="docs/performance.md")
    parser.add_argument("--network", action="store_true",
                        help="in process vs TCP vs unix socket instead (tools/bench_network.py)")
    args = parser.parse_args(argv)
    if args.network:
        import bench_network
        return bench_network.main(["--module", args.module, "--seconds", str(args.seconds),
                                   "--repeat", str(args.repeat)])

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    chart = out.with_suffix(".svg")
    ours = ctperf.Target(args.module)
    theirs = ctperf.Target(args.compare)
    try:
        pairs = suite_plan(args.compare_find_100k)
        results = ctperf.run_suite([ours, theirs], pairs, args.seconds, args.repeat,
                                   max(args.repeat, 5), _progress)
        rss = None
        if not args.compare_find_100k:   # ptkhsm alone: 100,000 objects, then its RSS
            extra = ctperf.run_suite([ours], [("find-100k", 1)], args.seconds, 1, 1, _progress)
            results.update(extra)
            pairs.append(("find-100k", 1))
        rss = results[(ours.name, "find-100k", 1)]
    except ctperf.CtperfError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        ours.close()
        theirs.close()

    a, b = ours.name, theirs.name
    goals = {(op, n): g for op, n, g in RATIO_GOALS}
    bars = [(ctperf.test_name(op, n), ctperf.ratio(results, a, b, op, n), goals.get((op, n)))
            for op, n in pairs if (b, op, n) in results]
    ratio_chart(chart, f"{a} / {b}: ops/s ratio ({args.seconds:g} s, median of {args.repeat})", bars)
    floor = gil_floor.run(args.seconds, THREADS)
    out.write_text(report(results, a, b, pairs, args, rss, floor))
    print(f"bench: wrote {out} and {chart}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
