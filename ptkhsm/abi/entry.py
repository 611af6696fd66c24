"""Called by the init code of libptkhsm.so once the interpreter is up."""

from .. import __version__


def attach(ffi, lib, names):
    """Attach every exported function; refuse to start half-attached or version-mismatched.

    An extern "Python" entry with no code attached would return 0 = CKR_OK:
    raising here leaves the library not ready, so every call returns
    CKR_GENERAL_ERROR instead.
    """
    shim_version = ffi.string(lib.ptkhsm_shim_version()).decode()
    if shim_version != __version__:
        raise ImportError(f"libptkhsm.so {shim_version} does not match the ptkhsm package {__version__}: "
                          f"reinstall ptkhsm (and run `ptkhsm install` again for an installed copy)")
    from . import functions
    from .. import gate
    gate.install(lib.ptkhsm_let_others_in, lib.ptkhsm_share_cores)
    missing = set(names) - functions.IMPLEMENTED
    extra = functions.IMPLEMENTED - set(names)
    if missing or extra:
        raise ImportError(f"ABI mismatch: no Python code for {sorted(missing)}, unknown {sorted(extra)}")
