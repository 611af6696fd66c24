"""`ptkhsm register` / `ptkhsm unregister`: the p11-kit module file for libptkhsm.so.

p11-kit (and everything that loads modules through it: p11-kit-proxy.so,
GnuTLS, the OpenSSL pkcs11 engine and provider by default, Firefox via
p11-kit-proxy) finds modules by their `<name>.module` files (pkcs11.conf(5)):

- user level: `$XDG_CONFIG_HOME/pkcs11/modules/`, by default
  `$HOME/.config/pkcs11/modules/`. p11-kit ignores it for root;
- system level (`--system`): `/etc/pkcs11/modules/`.

The file names the library by absolute path; by default the libptkhsm.so of
this package. `unregister` removes only a file that `register` wrote.
"""

import os
import re
import sys
from pathlib import Path

NAME = "ptkhsm"
SYSTEM_DIR = Path("/etc/pkcs11/modules")
MARKER = "# Written by `ptkhsm register`"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # what p11-kit accepts before ".module"


class RegisterError(Exception):
    pass


def user_dir(environ=None):
    """The user-level module directory, as p11-kit expands `~/.config/pkcs11/modules`."""
    environ = os.environ if environ is None else environ
    xdg = environ.get("XDG_CONFIG_HOME")
    if xdg and os.path.isabs(xdg):
        base = Path(xdg)
    else:
        home = environ.get("HOME") or str(Path.home())
        base = Path(home) / ".config"
    return base / "pkcs11" / "modules"


def module_file(name=NAME, system=False, environ=None):
    if not _NAME.match(name):
        raise RegisterError(f"{name!r} is not a module name p11-kit accepts (letters, digits, '_', '-', '.')")
    return (SYSTEM_DIR if system else user_dir(environ)) / f"{name}.module"


def render(library):
    return (f"{MARKER}; remove it with `ptkhsm unregister`.\n"
            "# p11-kit module configuration, see pkcs11.conf(5).\n"
            f"module: {library}\n")


def register(library, name=NAME, system=False, environ=None):
    """Write <dir>/<name>.module naming `library`; returns the file's path."""
    library = Path(library)
    if not library.is_absolute():
        raise RegisterError(f"{library}: give the library's absolute path")
    if not library.is_file():
        raise RegisterError(f"{library}: no such library")
    path = module_file(name, system, environ)
    if path.exists() and MARKER not in path.read_text(errors="replace"):
        raise RegisterError(f"{path} exists and was not written by `ptkhsm register`: not overwriting it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(render(library))
        temporary.chmod(0o644)
        os.replace(temporary, path)
    except PermissionError as exc:
        raise RegisterError(f"cannot write {path}: {exc.strerror}"
                            + (" (--system needs root)" if system else "")) from None
    return path


def unregister(name=NAME, system=False, environ=None):
    """Remove the module file `register` wrote; returns its path, or None if there was none."""
    path = module_file(name, system, environ)
    if not path.exists():
        return None
    if MARKER not in path.read_text(errors="replace"):
        raise RegisterError(f"{path} was not written by `ptkhsm register`: not removing it")
    try:
        path.unlink()
    except PermissionError as exc:
        raise RegisterError(f"cannot remove {path}: {exc.strerror}"
                            + (" (--system needs root)" if system else "")) from None
    return path


def add_parsers(sub):
    """The `register` and `unregister` sub-commands of `ptkhsm`."""
    for command, text in (("register", "write a p11-kit module file so p11-kit-based programs load the module"),
                          ("unregister", "remove the p11-kit module file `register` wrote")):
        parser = sub.add_parser(command, help=text, description=text)
        parser.add_argument("--system", action="store_true",
                            help=f"for all users: {SYSTEM_DIR}/ (needs root) instead of "
                                 "$XDG_CONFIG_HOME or ~/.config/pkcs11/modules/")
        parser.add_argument("--name", default=NAME, help=f"p11-kit module name, the file <name>.module "
                                                         f"(default {NAME})")
        if command == "register":
            parser.add_argument("--module", help="library to register (default: this package's libptkhsm.so)")


def command(args, default_library):
    """Run `register` or `unregister`; returns the exit status."""
    try:
        if args.command == "register":
            library = args.module or default_library
            path = register(library, args.name, args.system)
            print(f"registered {args.name} with p11-kit: {path} (module: {library})")
            if not args.system and hasattr(os, "geteuid") and os.geteuid() == 0:
                print("note: p11-kit ignores user module files for root; use --system for root's programs",
                      file=sys.stderr)
        else:
            path = unregister(args.name, args.system)
            print(f"unregistered {args.name}: removed {path}" if path else
                  f"{args.name} was not registered ({module_file(args.name, args.system)} does not exist)")
    except RegisterError as exc:
        print(f"ptkhsm {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0
