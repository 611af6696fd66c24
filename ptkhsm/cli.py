"""The `ptkhsm` command."""

import argparse
import sys
from pathlib import Path

from . import ctperf
from . import install
from . import p11kit


def module_path():
    return str(Path(__file__).resolve().parent / "libptkhsm.so")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="ptkhsm", description="ptkhsm PKCS#11 provider tools")
    sub = parser.add_subparsers(dest="command", required=True)
    module = sub.add_parser("module", help="print the absolute path of libptkhsm.so: the copy `ptkhsm install` "
                                           "made at the prefix when it is this package's, else the package's own")
    module.add_argument("--prefix", type=Path, default=install.DEFAULT_PREFIX,
                        help=f"where to look for an installed copy (default {install.DEFAULT_PREFIX})")
    install.add_parsers(sub)
    p11kit.add_parsers(sub)
    ctperf.add_arguments(sub.add_parser("ctperf", help="speed of PKCS#11 operations through the C ABI"),
                         module_path())
    args = parser.parse_args(argv)
    if args.command in ("register", "unregister"):
        return p11kit.command(args, module_path())
    if args.command in ("install", "uninstall"):
        return install.command(args, module_path())
    if args.command == "ctperf":
        return ctperf.command(args)
    if args.command == "module":
        path = module_path()
        if not Path(path).exists():
            print(f"ptkhsm: {path} is missing: reinstall the package", file=sys.stderr)
            return 1
        copy, problem = install.installed_copy(path, args.prefix.absolute())
        if problem:
            print(f"ptkhsm: {problem}", file=sys.stderr)
        print(copy or path)
    return 0


def ctconf_main():
    sys.exit(main(["ctconf", *sys.argv[1:]]))


def ctperf_main():
    sys.exit(main(["ctperf", *sys.argv[1:]]))
