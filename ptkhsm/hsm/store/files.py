"""The files of a data directory: who may read them, checked on every open.

The data directory is 0700 and every file in it 0600, owned by the user the
module runs as. A directory others can write to lets them swap our files; a
file others can read gives them the sealed blobs (and the storage key file,
the key to the public objects): both are refused with an error naming the
path and the fix, never silently repaired (docs/security.md).
"""

import os
import stat

from ...constants import CKR_DEVICE_ERROR
from ...errors import CKRError
from . import sealing


def _refuse(path, why):
    raise CKRError(CKR_DEVICE_ERROR, f"store: {path}: {why}")


def _check_private(path, info, is_kind, kind, refused_bits, refusal, fix):
    """Ours, of the right kind, and none of `refused_bits` in its mode."""
    if not is_kind(info.st_mode):
        _refuse(path, f"not a {kind}")
    if info.st_uid != os.geteuid():
        _refuse(path, f"owned by uid {info.st_uid}, not by this user (uid {os.geteuid()}): "
                      f"chown it or use another data directory")
    if info.st_mode & refused_bits:
        _refuse(path, f"{refusal} (mode {stat.S_IMODE(info.st_mode):04o}): {fix}")


def private_dir(path):
    """Create the data directory 0700 if missing; refuse one others can write to or not ours."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.stat(path)
    except OSError as exc:
        _refuse(path, f"cannot create or open the data directory: {exc.strerror}")
    _check_private(path, info, stat.S_ISDIR, "directory", 0o022, "data directory is group- or world-writable",
                   "chmod 700 it")


def check_private_file(path):
    """A file of the store, if present: ours and 0600 (no access for group or others)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        _refuse(path, f"cannot inspect: {exc.strerror}")
    _check_private(path, info, stat.S_ISREG, "regular file", 0o077, "readable or writable by group or others",
                   "chmod 600 it")


def read_key(path):
    """The bytes of a key file, or None if there is none."""
    check_private_file(path)
    try:
        with open(path, "rb") as key_file:
            return key_file.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        _refuse(path, f"cannot read the key file: {exc.strerror}")


def create_key(path, key):
    """Write a new key file 0600, atomically: a file written beside it, then linked into
    place (a second process racing us gets the first one's key, complete). -> the key
    in the file."""
    temporary = f"{path}.{os.getpid()}.new"
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if os.write(descriptor, key) != len(key):
                raise OSError(28, "short write (disk full?)")
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        _refuse(path, f"cannot write the key file: {exc.strerror}")
    finally:
        try:
            os.unlink(temporary)
        except OSError:
            pass
    return read_key(path)


def storage_key(key_path, recorded, where):
    """The storage key a store opens with, for either backend. `recorded`: the check value
    the store keeps (None: the store has none yet, and takes the key file's key, made now
    if there is none). -> (key, check value to record, or None when it is recorded)."""
    key = read_key(key_path)
    if recorded is None:
        if key is None:
            key = create_key(key_path, sealing.new_storage_key())
        _check_key_size(key_path, key)
        return key, sealing.storage_check(key)
    if key is None:
        raise CKRError(CKR_DEVICE_ERROR, f"store {where}: its storage key file {key_path} "
                       f"is missing: the public objects cannot be read without it (restore it)")
    _check_key_size(key_path, key)
    if not sealing.is_storage_key(key, recorded):
        raise CKRError(CKR_DEVICE_ERROR, f"store {where}: the storage key file {key_path} "
                       f"is not this store's")
    return key, None


def _check_key_size(key_path, key):
    if len(key) != sealing.STORAGE_KEY_SIZE:
        raise CKRError(CKR_DEVICE_ERROR, f"store: {key_path}: {len(key)} bytes, "
                       f"a storage key has {sealing.STORAGE_KEY_SIZE}")
