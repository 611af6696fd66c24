"""The `ptkhsm` command."""

import argparse
import os
import sys
from pathlib import Path

from . import ctconf, ctkmu, ctperf
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
    serve = sub.add_parser("serve", help="serve the HSM of ET_PTKC_SW_DATAPATH to network clients")
    where = serve.add_mutually_exclusive_group()
    where.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:12396",
                       help="TCP address (default 127.0.0.1:12396, PTK-C's netserver port; port 0: any)")
    where.add_argument("--unix", metavar="PATH", help="a unix-domain socket instead of TCP")
    serve.add_argument("--workers", type=int, default=None,
                       help="worker processes (default ET_HSM_NETSERVER_WORKERS, 0: one per CPU)")
    ctkmu.add_arguments(sub.add_parser("ctkmu", help="key management (PTK-C syntax), ExtToken backup"))
    ctconf.add_arguments(sub.add_parser("ctconf", help="HSM configuration (PTK-C syntax): adapter block, "
                                                        "security flags, token initialisation"))
    _add_store_parser(sub)
    args, extra = parser.parse_known_args(argv)
    if args.command == "ctkmu":   # PTK-C puts the file after the options: argparse leaves it over
        return ctkmu.command(args, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "serve":
        return _serve(args)
    if args.command == "ctconf":
        return ctconf.command(args)
    if args.command == "store":
        from .hsm.store import copy
        return copy.command(args)
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


def _add_store_parser(sub):
    store = sub.add_parser("store", help="token store maintenance")
    store = store.add_subparsers(dest="store_command", required=True)
    copy = store.add_parser("copy", help="copy every token and object between sqlite and PostgreSQL stores, "
                                         "read back and compared")
    copy.add_argument("source", metavar="SRC", help="a data directory or a libpq connection string / URI")
    copy.add_argument("target", metavar="DST", help="a data directory or a libpq connection string / URI")
    copy.add_argument("--force", action="store_true", help="replace what DST already holds")


def ctperf_main():
    sys.exit(main(["ctperf", *sys.argv[1:]]))


def _serve(args):
    import logging

    from .config import Config
    from .errors import ConfigError
    from .log import set_stderr_level
    from .transport.server import serve

    if "PTKHSM_LOG_LEVEL" not in os.environ:
        set_stderr_level(logging.INFO)  # a server logs its connections unless told otherwise
    try:
        config = Config().validate()
        return serve(config, listen=None if args.unix else args.listen, unix=args.unix, workers=args.workers)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"ptkhsm serve: {exc}", file=sys.stderr)
        return 1


def ctkmu_main():
    sys.exit(main(["ctkmu", *sys.argv[1:]]))


def ctconf_main():
    sys.exit(main(["ctconf", *sys.argv[1:]]))
