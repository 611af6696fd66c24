"""`ptkhsm ctperf`: speed of PKCS#11 operations through the C ABI, after PTK-C's ctperf.

The measuring is done by ctperf-driver, a small C program (ctperf/driver.c)
that dlopens any PKCS#11 module and runs one named operation for T seconds on
N threads, one session each, timing every call. This module gives each module
under test a fresh token (a temporary ET_PTKC_SW_DATAPATH for ptkhsm, a
SOFTHSM2_CONF with a temporary token directory for SoftHSMv2), runs the
driver once per test in a new process, and prints one line per test (name,
ops/s, ms/op, bytes/s) or, with a second module, both side by side with the
ratio. With `--repeat R` every test runs R times, the modules (and the
thread counts of one operation) taking turns, and the median run counts: the
machines this runs on are shared and noisy.

Operations that a module lacks (CKR_MECHANISM_INVALID...) are reported as
"n/a" with the CKR, never as a failure of the whole run.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .constants import CKR

PACKAGE = Path(__file__).resolve().parent
SOURCE_TREE = PACKAGE.parent
DRIVER_NAME = "ctperf-driver"
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN_LABEL = "ctperf"
SO_PIN = "12345678"

# name -> what is measured; the order is the order of a run. find-* come last, in
# ascending size, because they fill the token and a fill only ever adds objects.
TESTS = {
    "init": "cold start: dlopen + C_Initialize to first slot/token result",
    "session": "C_OpenSession + C_CloseSession",
    "random32": "C_GenerateRandom, 32 bytes",
    "sha256-64": "SHA-256 digest of 64 bytes (init + digest)",
    "getattr": "C_GetAttributeValue CKA_LABEL + CKA_MODULUS",
    "aes-cbc-1k": "AES-256-CBC encrypt 1 KiB (init + encrypt)",
    "aes-gcm-1m": "AES-256-GCM encrypt 1 MiB (init + encrypt)",
    "aes-gcm-4k": "AES-256-GCM encrypt 4 KiB (init + encrypt)",
    "hmac-sha256-64": "HMAC-SHA256 of 64 bytes (init + sign)",
    "rsa2048-sign": "RSA-2048 sign, SHA256-RSA-PKCS, 32 bytes",
    "rsa2048-verify": "RSA-2048 verify, SHA256-RSA-PKCS, 32 bytes",
    "p256-sign": "ECDSA P-256 sign (CKM_ECDSA) of a 32-byte digest",
    "ed25519-sign": "Ed25519 sign (CKM_EDDSA), 32 bytes",
    "ecdh-p256": "ECDH P-256 derive (CKM_ECDH1_DERIVE, session key)",
    "aes-kw-256": "AES key wrap (CKM_AES_KEY_WRAP) of an AES-256 key",
    "aes-keygen": "AES-256 key generation, session object",
    "object-create": "C_CreateObject, durable token data object",
    "find-sign": "find a token P-256 key by label, then sign with it",
    "find-1k": "find one label among 1,000 token objects",
    "find-10k": "find one label among 10,000 token objects",
    "find-100k": "find one label among 100,000 token objects",
}
OPT_IN = ("find-100k",)   # its fill takes minutes on SoftHSMv2 (one file per object)
DEFAULT_OPS = tuple(op for op in TESTS if op not in OPT_IN)


class CtperfError(Exception):
    """A run that cannot go on (no compiler, unknown module kind...); the text says why."""


# -- the driver program --------------------------------------------------------------
def driver_path():
    """The installed ctperf-driver, or one compiled on first use into the source tree's
    .cache (in-place development, where setup.py's build step has not run)."""
    installed = PACKAGE / DRIVER_NAME
    source = SOURCE_TREE / "ctperf" / "driver.c"
    builder = SOURCE_TREE / "shim" / "build_ctperf.py"
    if installed.exists() and not (source.exists() and source.stat().st_mtime > installed.stat().st_mtime):
        return installed
    if not (source.exists() and builder.exists()):
        raise CtperfError(f"{installed} is missing: reinstall ptkhsm")
    import hashlib
    import importlib.util

    digest = hashlib.sha256(source.read_bytes() + builder.read_bytes()).hexdigest()[:16]
    cache = SOURCE_TREE / ".cache" / f"ctperf-{digest}"
    if not (cache / DRIVER_NAME).exists():
        spec = importlib.util.spec_from_file_location("build_ctperf", builder)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        try:
            module.build(cache, source)
        except RuntimeError as exc:
            raise CtperfError(str(exc)) from None
    return cache / DRIVER_NAME


# -- a module under test ---------------------------------------------------------------------
def kind_of(module):
    name = os.path.basename(module).lower()
    if "ptkhsm" in name:
        return "ptkhsm"
    if "softhsm" in name:
        return "softhsm"
    return "other"


class Target:
    """One PKCS#11 module with the environment that gives it its own token."""

    def __init__(self, module, pin="1234", slot=0, existing=False, name=None):
        self.module = os.path.abspath(module)
        self.kind = kind_of(self.module)
        self.name = name or {"ptkhsm": "ptkhsm", "softhsm": "SoftHSMv2"}.get(self.kind, Path(module).name)
        self.pin = pin
        self.slot = slot
        self.existing = existing
        self.env = dict(os.environ)
        self._tmp = None
        self.ready = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def prepare(self):
        """A fresh, initialised token (or the caller's existing one)."""
        if self.ready:
            return
        if not Path(self.module).exists():
            raise CtperfError(f"{self.module}: no such module")
        if self.existing:
            self.ready = True
            return
        if self.kind == "other":
            raise CtperfError(f"{self.module}: ctperf makes fresh tokens only for ptkhsm and SoftHSMv2; "
                              f"for another module give --existing-token with --slot and --pin "
                              f"(object-create and find-* write objects to that token)")
        self._tmp = tempfile.mkdtemp(prefix=f"ctperf-{self.kind}-")
        if self.kind == "ptkhsm":
            self.env["ET_PTKC_SW_DATAPATH"] = os.path.join(self._tmp, "data")
            slot = ["--slot", str(self.slot)]
        else:
            tokens = os.path.join(self._tmp, "tokens")
            os.mkdir(tokens)
            conf = os.path.join(self._tmp, "softhsm2.conf")
            Path(conf).write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                                  f"log.level = ERROR\nslots.removable = false\n")
            self.env["SOFTHSM2_CONF"] = conf
            slot = []  # SoftHSM: the first uninitialised slot
        result = self._driver(["--op", "init-token", "--label", TOKEN_LABEL, "--so-pin", SO_PIN,
                               "--pin", self.pin, *slot])
        if result.get("status") != "ok":
            raise CtperfError(f"{self.name}: cannot initialise a token: {describe_failure(result)}")
        self.ready = True

    def _token_args(self):
        if self.existing:
            return ["--slot", str(self.slot), "--pin", self.pin]
        return ["--token", TOKEN_LABEL, "--pin", self.pin]

    def run(self, op, threads=1, seconds=2.0, warmup=2):
        """One run of the driver -> its JSON result (status ok, n/a or error)."""
        self.prepare()
        if op == "init":
            return self._driver(["--op", "init"])
        return self._driver(["--op", op, "--threads", str(threads), "--seconds", str(seconds),
                             "--warmup", str(warmup), *self._token_args()])

    def _driver(self, args):
        command = [str(driver_path()), "--module", self.module, *args]
        proc = subprocess.run(command, env=self.env, stdout=subprocess.PIPE, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if lines:
            try:
                return json.loads(lines[-1])
            except ValueError:
                pass
        return {"status": "error", "why": f"ctperf-driver exited with {proc.returncode}"
                + (f" (signal {-proc.returncode})" if proc.returncode < 0 else "")}


def ckr_name(text):
    try:
        return CKR(int(text, 16)).name
    except (ValueError, TypeError):
        return str(text)


def describe_failure(result):
    if result.get("status") == "n/a":
        return f"n/a ({ckr_name(result.get('ckr'))} from {result.get('where')})"
    return result.get("why", "failed")


# -- runs and their results -------------------------------------------------------------------
@dataclass
class Result:
    target: str
    op: str
    threads: int
    runs: list = field(default_factory=list)   # the driver's JSON, one per repetition

    @property
    def ok(self):
        return bool(self.runs) and all(r.get("status") == "ok" for r in self.runs)

    @property
    def median(self):
        """The run with the median throughput (its latencies stay consistent with it)."""
        good = sorted((r for r in self.runs if r.get("status") == "ok"), key=lambda r: r["ops_per_s"])
        return good[(len(good) - 1) // 2] if good else None

    @property
    def ops_per_s(self):
        return self.median["ops_per_s"] if self.ok else None

    def failure(self):
        bad = [r for r in self.runs if r.get("status") != "ok"]
        return describe_failure(bad[0]) if bad else "not run"

    def as_dict(self):
        out = {"target": self.target, "op": self.op, "threads": self.threads,
               "status": "ok" if self.ok else "n/a", "repetitions": len(self.runs)}
        if self.ok:
            best = self.median
            out.update({k: best[k] for k in best if k not in ("op", "status", "threads")})
            out["ops_per_s_runs"] = [r["ops_per_s"] for r in self.runs]
            out["fill_s"] = max(r.get("fill_s", 0) for r in self.runs)  # the run that filled
        else:
            out["why"] = self.failure()
            bad = [r for r in self.runs if r.get("status") == "n/a"]
            if bad:
                out["ckr"] = ckr_name(bad[0].get("ckr"))
        return out


def plan(ops, threads):
    """(op, threads) pairs in run order: init once; find-* last, ascending."""
    unknown = [op for op in ops if op not in TESTS]
    if unknown:
        raise CtperfError(f"unknown operation(s): {', '.join(unknown)}; known: {', '.join(TESTS)}")
    ordered = [op for op in TESTS if op in ops]
    return [(op, 1 if op == "init" else n) for op in ordered for n in (threads if op != "init" else [1])]


def run_suite(targets, pairs, seconds=2.0, repeat=1, init_runs=5, progress=None):
    """Run every (op, threads) on every target; targets take turns within a repetition, and
    so do the thread counts of one op (adjacent pairs of it): a ratio of 8 threads to one
    then compares runs seconds apart, not the machine of one minute with that of the next.

    -> {(target name, op, threads): Result}
    """
    results = {}
    for target in targets:
        target.prepare()
    total = len(pairs) * len(targets)
    done = 0
    for group in _by_op(pairs):
        op = group[0][0]
        rounds = max(init_runs, repeat) if op == "init" else repeat
        for pair in group:
            for target in targets:
                results[(target.name, *pair)] = Result(target.name, *pair)
        for _ in range(rounds):
            for _, threads in group:
                for target in targets:
                    result = results[(target.name, op, threads)]
                    if result.runs and not result.ok:
                        continue  # n/a once is n/a
                    result.runs.append(target.run(op, threads, seconds))
        for pair in group:
            for target in targets:
                done += 1
                if progress:
                    progress(done, total, results[(target.name, *pair)])
    return results


def _by_op(pairs):
    """[(op, threads)...] -> runs of adjacent pairs with the same op, in order."""
    groups = []
    for pair in pairs:
        if groups and groups[-1][0][0] == pair[0]:
            groups[-1].append(pair)
        else:
            groups.append([pair])
    return groups


# -- output --------------------------------------------------------------------------------------
def _bytes(rate):
    for unit, size in (("GB/s", 1e9), ("MB/s", 1e6), ("KB/s", 1e3)):
        if rate >= size:
            return f"{rate / size:.1f} {unit}"
    return f"{rate:.0f} B/s" if rate else "-"


def test_name(op, threads):
    return op if threads == 1 else f"{op} x{threads}"


def ratio(results, a, b, op, threads):
    ra, rb = results.get((a, op, threads)), results.get((b, op, threads))
    if ra and rb and ra.ok and rb.ok and rb.ops_per_s:
        return ra.ops_per_s / rb.ops_per_s
    return None


def format_lines(results, target, pairs):
    """PTK-C ctperf's shape: one line per test with ops/s, ms/op and bytes/s."""
    lines = [f"{'test':<22} {'ops/s':>12} {'ms/op':>10} {'p99 ms':>9} {'bytes/s':>11}  what"]
    for op, threads in pairs:
        result = results[(target, op, threads)]
        name = test_name(op, threads)
        if not result.ok:
            lines.append(f"{name:<22} {'n/a':>12}  {result.failure()}")
            continue
        m = result.median
        lines.append(f"{name:<22} {m['ops_per_s']:>12.1f} {m['ms_per_op']:>10.4f} {m['p99_ms']:>9.3f} "
                     f"{_bytes(m['bytes_per_s']):>11}  {TESTS[op]}")
    return lines


def format_compare(results, a, b, pairs):
    head = f"{'test':<22} {a + ' ops/s':>16} {b + ' ops/s':>16} {'ratio':>7}  {a + ' ms/op':>14} {b + ' ms/op':>14}"
    lines = [head]
    for op, threads in pairs:
        ra, rb = results[(a, op, threads)], results[(b, op, threads)]
        cells = []
        for r in (ra, rb):
            cells.append(f"{r.ops_per_s:>16.1f}" if r.ok else f"{'n/a':>16}")
        rt = ratio(results, a, b, op, threads)
        ms = [f"{r.median['ms_per_op']:>14.4f}" if r.ok else f"{'-':>14}" for r in (ra, rb)]
        lines.append(f"{test_name(op, threads):<22} {cells[0]} {cells[1]} "
                     f"{(f'{rt:.2f}x' if rt else '-'):>7}  {ms[0]} {ms[1]}")
    notes = [f"  {test_name(op, t)} on {r.target}: {r.failure()}"
             for op, t in pairs for r in (results[(a, op, t)], results[(b, op, t)]) if not r.ok]
    if notes:
        lines += ["", "n/a:"] + notes
    return lines


def as_json(results, targets, pairs, seconds, repeat):
    doc = {"seconds": seconds, "repeat": repeat,
           "targets": [{"name": t.name, "module": t.module, "kind": t.kind} for t in targets],
           "results": [results[(t.name, op, n)].as_dict() for op, n in pairs for t in targets]}
    if len(targets) == 2:
        a, b = targets[0].name, targets[1].name
        doc["ratios"] = [{"op": op, "threads": n, "ratio": ratio(results, a, b, op, n)} for op, n in pairs]
    return doc


# -- the command ----------------------------------------------------------------------------------
def _csv(text):
    return [part.strip() for part in text.split(",") if part.strip()]


def _threads(text):
    try:
        values = [int(part) for part in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: thread counts are integers, e.g. 1,2,8") from None
    if not values or any(not 1 <= v <= 256 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: thread counts between 1 and 256")
    return values


def add_arguments(parser, default_module):
    parser.add_argument("--module", default=default_module,
                        help="PKCS#11 module to measure (default: this package's libptkhsm.so)")
    parser.add_argument("--compare", metavar="MODULE", help=f"measure this module too, side by side "
                        f"(SoftHSMv2: {SOFTHSM})")
    parser.add_argument("--ops", type=_csv, default=list(DEFAULT_OPS),
                        help=f"comma-separated tests (default: all but {', '.join(OPT_IN)}): {', '.join(TESTS)}")
    parser.add_argument("--find-100k", action="store_true", help="add find-100k (slow to fill on SoftHSMv2)")
    parser.add_argument("--threads", type=_threads, default=[1], help="thread counts, e.g. 1,2,8 (default 1)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per test (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per test, the median counts (default 1)")
    parser.add_argument("--init-runs", type=int, default=5,
                        help="cold-start processes for the init test, the median counts (default 5)")
    parser.add_argument("--pin", default="1234", help="user PIN (default 1234)")
    parser.add_argument("--slot", type=int, default=0, help="slot of the ptkhsm token to use (default 0)")
    parser.add_argument("--existing-token", action="store_true",
                        help="use the initialised token in --slot with --pin instead of making fresh ones")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON document")
    parser.add_argument("--plot", metavar="FILE.svg", help="draw the ratios (needs --compare) as an SVG bar chart")


def command(args):
    if args.seconds <= 0 or args.repeat < 1 or args.init_runs < 1:
        print("ctperf: --seconds, --repeat and --init-runs must be positive", file=sys.stderr)
        return 2
    if args.plot and not args.compare:
        print("ctperf: --plot draws ratios: give --compare MODULE", file=sys.stderr)
        return 2
    ops = list(args.ops) + (["find-100k"] if args.find_100k and "find-100k" not in args.ops else [])
    targets = [Target(args.module, args.pin, args.slot, args.existing_token)]
    if args.compare:
        targets.append(Target(args.compare, args.pin, args.slot, args.existing_token))
        if targets[0].name == targets[1].name:
            targets[1].name += " (2)"
    try:
        pairs = plan(ops, args.threads)
        driver_path()
        results = run_suite(targets, pairs, args.seconds, args.repeat, args.init_runs,
                            None if args.json else _progress)
    except CtperfError as exc:
        print(f"ctperf: {exc}", file=sys.stderr)
        return 1
    finally:
        for target in targets:
            target.close()
    if args.json:
        print(json.dumps(as_json(results, targets, pairs, args.seconds, args.repeat), indent=1))
    elif len(targets) == 1:
        print(f"\n{targets[0].name}: {targets[0].module}")
        print("\n".join(format_lines(results, targets[0].name, pairs)))
    else:
        print(f"\n{targets[0].name}: {targets[0].module}\n{targets[1].name}: {targets[1].module}")
        print(f"ratio = {targets[0].name} ops/s / {targets[1].name} ops/s "
              f"({args.seconds:g} s per test, median of {args.repeat})")
        print("\n".join(format_compare(results, targets[0].name, targets[1].name, pairs)))
    if args.plot:
        from .svgchart import ratio_chart
        a, b = targets[0].name, targets[1].name
        bars = [(test_name(op, n), ratio(results, a, b, op, n), None) for op, n in pairs]
        ratio_chart(args.plot, f"{a} / {b} (ops/s ratio)", bars)
        if not args.json:
            print(f"plot: {args.plot}")
    return 0


def _progress(done, total, result):
    status = f"{result.ops_per_s:.1f} ops/s" if result.ok else result.failure()
    print(f"[{done}/{total}] {result.target} {test_name(result.op, result.threads)}: {status}",
          file=sys.stderr, flush=True)
