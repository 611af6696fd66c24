"""The `ptkhsm` command."""

import argparse
import sys
from pathlib import Path

from . import ctperf
from . import p11kit


def module_path():
    return str(Path(__file__).resolve().parent / "libptkhsm.so")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="ptkhsm", description="ptkhsm PKCS#11 provider tools")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("module", help="print the absolute path of libptkhsm.so")
    p11kit.add_parsers(sub)
    ctperf.add_arguments(sub.add_parser("ctperf", help="speed of PKCS#11 operations through the C ABI"),
                         module_path())
    args = parser.parse_args(argv)
    if args.command in ("register", "unregister"):
        return p11kit.command(args, module_path())
    if args.command == "ctperf":
        return ctperf.command(args)
    if args.command == "module":
        path = module_path()
        if not Path(path).exists():
            print(f"ptkhsm: {path} is missing: reinstall the package", file=sys.stderr)
            return 1
        print(path)
    return 0


def ctperf_main():
    sys.exit(main(["ctperf", *sys.argv[1:]]))
