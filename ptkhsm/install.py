"""`ptkhsm install` / `ptkhsm uninstall`: libptkhsm.so at a path every application accepts.

The package's own library lives in a venv's site-packages, a path that
changes with every venv and Python version, and that ssh-agent refuses (it
loads providers only when their real path matches `/usr/lib*/*` or
`/usr/local/lib*/*`). `install` copies it, as a real file, to
`<prefix>/lib/ptkhsm/libptkhsm.so` (default prefix `/usr/local`). The copy
still runs this package's Python code: the directories the package was
installed into are baked into the library when it is built (shim/build_shim.py),
and its version must match the package's (ptkhsm/abi/entry.py).

What install wrote is listed in a manifest beside the copy
(`<prefix>/lib/ptkhsm/install-manifest.json`): the library, the p11-kit
module file (`--p11-kit`) and the directories it had to create. `uninstall`
removes exactly those, and the manifest last.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

from . import __version__, p11kit

DEFAULT_PREFIX = Path("/usr/local")
LIBRARY = "libptkhsm.so"
MANIFEST = "install-manifest.json"
WRITTEN_BY = "ptkhsm install"


class InstallError(Exception):
    pass


def library_dir(prefix):
    return Path(prefix) / "lib" / "ptkhsm"


def installed_library(prefix):
    return library_dir(prefix) / LIBRARY


def manifest_file(prefix):
    return library_dir(prefix) / MANIFEST


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_manifest(prefix):
    """The manifest at `prefix`, or None when install wrote nothing there."""
    path = manifest_file(prefix)
    try:
        manifest = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        raise InstallError(f"{path}: unreadable ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("written_by") != WRITTEN_BY:
        raise InstallError(f"{path} was not written by `ptkhsm install`")
    return manifest


def _write_atomically(path, data, mode):
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        temporary.chmod(mode)
        # a new inode: processes that mapped the old copy keep it intact
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _make_dirs(directory, created):
    """Create `directory` and its missing parents, appending each to `created` (outermost first)."""
    missing = []
    for path in [directory, *directory.parents]:
        if path.exists():
            break
        missing.append(path)
    for path in reversed(missing):
        path.mkdir(mode=0o755)
        created.append(str(path))
        path.chmod(0o755)  # whatever the umask: every user's programs load the library


def install(source, prefix=DEFAULT_PREFIX, register_p11kit=False):
    """Copy `source` to <prefix>/lib/ptkhsm/libptkhsm.so; returns the copy's path."""
    prefix = Path(prefix)
    if not prefix.is_absolute():
        raise InstallError(f"{prefix}: give the prefix as an absolute path")
    target = installed_library(prefix)
    manifest = read_manifest(prefix)
    if manifest is None and target.exists():
        raise InstallError(f"{target} exists and was not written by `ptkhsm install`: not overwriting it")
    data = Path(source).read_bytes()
    manifest = manifest or {"written_by": WRITTEN_BY, "files": [], "directories": []}
    created = []
    try:
        _make_dirs(target.parent, created)
        _write_atomically(target, data, 0o755)
    except OSError as exc:
        for path in reversed(created):
            os.rmdir(path)
        hint = " (a system prefix needs root)" if isinstance(exc, PermissionError) else ""
        raise InstallError(f"cannot write {target}: {exc.strerror}{hint}") from None
    manifest.update(version=__version__, source=str(source), sha256=hashlib.sha256(data).hexdigest())
    manifest["directories"] = list(dict.fromkeys(manifest["directories"] + created))
    _record(prefix, manifest, target)  # before registering: a failure there leaves the copy removable
    if register_p11kit:
        try:
            _record(prefix, manifest, p11kit.register(target, system=True))
        except p11kit.RegisterError as exc:
            raise InstallError(f"{target} installed, but not registered with p11-kit: {exc}") from None
    return target


def _record(prefix, manifest, written):
    manifest["files"] = list(dict.fromkeys(manifest["files"] + [str(written)]))
    _write_atomically(manifest_file(prefix), (json.dumps(manifest, indent=1) + "\n").encode(), 0o644)


def uninstall(prefix=DEFAULT_PREFIX):
    """Remove what install wrote at `prefix`; returns the paths removed (empty if nothing was installed)."""
    manifest = read_manifest(prefix)
    if manifest is None:
        return []
    removed = []
    try:
        for name in manifest["files"]:
            path = Path(name)
            if path.suffix == ".module" and path.exists() and not _ours(path, prefix):
                continue  # rewritten by someone else since: theirs now
            if path.exists():
                path.unlink()
                removed.append(str(path))
        manifest_file(prefix).unlink()
        removed.append(str(manifest_file(prefix)))
        for name in reversed(manifest["directories"]):
            try:
                os.rmdir(name)
                removed.append(name)
            except FileNotFoundError:
                pass
            except OSError:
                break  # not empty: something else lives there now
    except PermissionError as exc:
        raise InstallError(f"cannot remove {exc.filename}: {exc.strerror} (a system prefix needs root)") from None
    return removed


def _ours(module_file, prefix):
    """Is this p11-kit module file still the one install wrote for this prefix's library?"""
    text = module_file.read_text(errors="replace")
    return p11kit.MARKER in text and f"module: {installed_library(prefix)}\n" in text


def installed_copy(source, prefix=DEFAULT_PREFIX):
    """(path, problem): the copy at `prefix` if it is `source`'s library; else None and why not (or None)."""
    target = installed_library(prefix)
    try:
        manifest = read_manifest(prefix)
    except InstallError as exc:
        return None, str(exc)
    if manifest is None or not target.is_file():
        return None, None
    if _digest(target) != _digest(source):
        return None, (f"{target} is another build of ptkhsm ({manifest.get('version')}, "
                      f"from {manifest.get('source')}): run `ptkhsm install` again to use it")
    return target, None


def add_parsers(sub):
    """The `install` and `uninstall` sub-commands of `ptkhsm`."""
    text = "copy libptkhsm.so to <prefix>/lib/ptkhsm/ (a path ssh-agent and configuration files can keep)"
    parser = sub.add_parser("install", help=text, description=text)
    parser.add_argument("--prefix", type=Path, default=DEFAULT_PREFIX, help=f"default {DEFAULT_PREFIX}")
    parser.add_argument("--p11-kit", action="store_true", dest="p11kit",
                        help=f"also register the copy with p11-kit for all users ({p11kit.SYSTEM_DIR}/)")
    text = "remove what `ptkhsm install` wrote at the prefix"
    parser = sub.add_parser("uninstall", help=text, description=text)
    parser.add_argument("--prefix", type=Path, default=DEFAULT_PREFIX, help=f"default {DEFAULT_PREFIX}")


def command(args, source):
    """Run `install` or `uninstall`; returns the exit status."""
    try:
        if args.command == "install":
            print(install(source, args.prefix.absolute(), args.p11kit))
        else:
            removed = uninstall(args.prefix.absolute())
            for path in removed:
                print(f"removed {path}")
            if not removed:
                print(f"nothing to remove: {manifest_file(args.prefix)} does not exist")
    except InstallError as exc:
        print(f"ptkhsm {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0
