"""Instructions per ExtToken cold load (docs/exttoken.md, "Performance").

    python tools/exttoken_profile.py [--short 500] [--long 2000] [--maxloaded 100000] [--masterkey DES2]

Fills a data directory with LONG external AES keys (as tools/bench_exttoken.py does), then
runs `valgrind --tool=callgrind` twice: cold-loading (first use: C_SignInit + C_Sign AES-CMAC,
which unwraps the key) SHORT keys, then LONG keys, and prints (instructions of the long run -
the short run's) / (LONG - SHORT), with the package of this source tree: start-up cancels out and the count does not depend on what
else the machine does, unlike the bench's wall clock. --keep DIR keeps the two callgrind
outputs for callgrind_annotate. One run alone:

    python tools/exttoken_profile.py --run COUNT DATA MAXLOADED
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# The source tree, not the installed copy: the point is A/B of the code being changed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ptkhsm import constants as C

from bench_exttoken import CMAC, PIN, RW, _library, ready_token  # noqa: E402  (tools/ is not a package)


def _session(api):
    s = api.open_session(0, RW)
    api.login(s, C.CKU_USER, PIN)
    return s


def fill(datapath, count, masterkey):
    lib = _library(datapath, ET_PTKC_EXTTOKEN_MASTERKEY=masterkey)
    api = lib.api
    ready_token(api, 0, b"profile")
    s = _session(api)
    for i in range(count):
        api.create_object(s, [
            (C.CKA_CLASS, C.CKO_SECRET_KEY), (C.CKA_KEY_TYPE, C.CKK_AES), (C.CKA_TOKEN, True),
            (C.CKA_LABEL, b"key%d" % i), (C.CKA_VALUE, os.urandom(16)), (C.CKA_SIGN, True),
            (C.CKA_EXTRACTABLE, True)])
    lib.finalize()


def run(count, datapath, maxloaded):
    lib = _library(datapath, ET_PTKC_EXTTOKEN_MAXLOADED=str(maxloaded))
    api = lib.api
    s = _session(api)
    api.find_init(s, [(C.CKA_CLASS, C.CKO_SECRET_KEY)])
    handles = sorted(api.find(s, 1_000_000))     # every run finds all: the same cost in both
    api.find_final(s)
    for h in handles[:count]:
        api.sign_init(s, CMAC, h)
        api.sign(s, b"x", 16)
    lib.finalize()


def instructions(count, datapath, maxloaded, keep=None):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(keep or tmp, f"callgrind.out.{count}")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                        __file__, "--run", str(count), datapath, str(maxloaded)], check=True, capture_output=True)
        return int(re.search(r"^summary: (\d+)", Path(out).read_text(), re.M).group(1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=500)
    parser.add_argument("--long", type=int, default=2000)
    parser.add_argument("--maxloaded", type=int, default=100_000)
    parser.add_argument("--masterkey", default="DES2", choices=("DES2", "AES256"))
    parser.add_argument("--data", help="a directory filled before (kept); default: a new one")
    parser.add_argument("--keep", help="keep the callgrind outputs in this directory")
    parser.add_argument("--run", nargs=3, metavar=("COUNT", "DATA", "MAXLOADED"))
    args = parser.parse_args(argv)
    if args.run:
        run(int(args.run[0]), args.run[1], int(args.run[2]))
        return 0
    datapath = args.data or tempfile.mkdtemp(prefix="ptkhsm-ext-profile-")
    try:
        masterkey = args.masterkey
        if not os.path.exists(os.path.join(datapath, "exttoken")):
            fill(datapath, args.long, args.masterkey)
        else:
            masterkey = "master keys of the --data given"
        long = instructions(args.long, datapath, args.maxloaded, args.keep)
        short = instructions(args.short, datapath, args.maxloaded, args.keep)
        print(f"cold load ({masterkey}, MAXLOADED {args.maxloaded:,}): "
              f"{(long - short) / (args.long - args.short) / 1e3:.1f}k instructions per object")
    finally:
        if not args.data:
            shutil.rmtree(datapath, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
