# Run by libptkhsm.so's C code (ptkhsm_shim.c) in the host's interpreter,
# before cffi imports anything there: can the HSM share this interpreter?
# Given SITEDIRS (where ptkhsm was installed), HERE (the directory of the
# .so), REFUSE (True when a reason means CKR_GENERAL_ERROR, not a separate
# process), VERSION (the library's), PINS ({distribution: version} from
# pyproject) and IMPORTS ({module: distribution}), it sets `reason` (None, or
# why the HSM cannot run here) and `package` (the ptkhsm package directory
# the init code loads, or "").
# Plain stdlib only: nothing of ours is importable yet.
import os
import sys


def _imported_conflict():
    for module, dist in IMPORTS.items():
        loaded = sys.modules.get(module)
        have = getattr(loaded, "__version__", None) if loaded is not None else None
        if have is not None and have != PINS[dist]:
            where = getattr(loaded, "__file__", None) or "?"
            return (f"the host has already imported {module} {have} (from {where}); "
                    f"libptkhsm.so needs {dist} {PINS[dist]}")
    return None


def _installed(dist):
    # -> (version, directory) of the first metadata of `dist` on sys.path, or None: what
    # importlib.metadata.distribution finds, read from the directory names (importing
    # importlib.metadata took 47-60 ms in a bare interpreter: email, zipfile, csv...).
    prefix = dist.replace("-", "_").lower() + "-"
    for path in sys.path:
        try:
            names = os.listdir(path or ".")
        except OSError:
            continue
        for name in names:
            lower = name.lower()
            if lower.startswith(prefix) and lower.endswith((".dist-info", ".egg-info")):
                return name[len(prefix):].rsplit(".", 1)[0].split("-")[0], path
    return None


def _resolved_conflict():
    # What an import would find now: the host's own copy comes first.
    for dist, want in PINS.items():
        found = _installed(dist)
        if found is None:
            return f"{dist} {want} is not installed in {os.pathsep.join(SITEDIRS)}"
        if found[0] != want:
            return (f"the host's environment has {dist} {found[0]} (in {found[1]}); "
                    f"libptkhsm.so needs {dist} {want}")
    return None


def _package_dir():
    # The package beside the library (installed, or a development build in
    # the source tree) is loaded by path, so no directory is put ahead of
    # the host's; a copy of the library elsewhere uses the installed package.
    for candidate in [HERE] + [os.path.join(d, "ptkhsm") for d in SITEDIRS]:
        if os.path.basename(candidate) == "ptkhsm" and os.path.isfile(os.path.join(candidate, "__init__.py")):
            return candidate
    return ""


def _ptkhsm_conflict(package):
    # A host that imported ptkhsm itself (its own tools, our tests) keeps that
    # copy if it is this library's version.
    loaded = sys.modules.get("ptkhsm")
    have = getattr(loaded, "__version__", None)
    if loaded is None or have == VERSION:
        return None
    return f"the host has already imported ptkhsm {have} ({loaded.__file__}); libptkhsm.so is ptkhsm {VERSION}"


def _check():
    global package
    reason = _imported_conflict()
    if reason:
        return reason
    for path in SITEDIRS:
        if path not in sys.path:
            sys.path.append(path)  # after the host's own directories: never shadow them
    package = _package_dir()
    return _ptkhsm_conflict(package) or _resolved_conflict()


package = ""
reason = _check()
if reason and REFUSE:
    # The C side prints it on stderr (where ptkhsm's log goes); a host that
    # gave the `ptkhsm` logger handlers of its own gets it there too.
    import logging
    if logging.getLogger("ptkhsm").handlers:
        logging.getLogger("ptkhsm").error(reason)
