"""Running programs as another user (www-data, nobody) from a test run as root.

`as_user(name)` is setpriv's prefix: that user's uid, primary group and
groups. Such a program loading libptkhsm.so runs the venv's Python, whose
base installation must be readable by the user, as a system-wide Python is.
Where it is not (here /root/.pyenv, under /root, mode 0700), `python_view()`
is a prefix that runs the program in a private mount namespace (unshare
--mount) where the closed directory is an empty tmpfs holding only the Python
installation: the view a service user has of a system-wide Python. Nothing
else changes: the data directory, the socket and the other files keep their
owners and modes.
"""

import grp
import os
import pwd
import sys
from pathlib import Path

_VIEW = ('d=$(mktemp -d) && mount --bind "$1" "$d" && mount -t tmpfs -o mode=0755,size=1m ptkhsm-view "$2" '
         '&& mkdir -p "$1" && mount --move "$d" "$1" && rmdir "$d" && shift 2 && exec "$@"')


def account(name):
    """(uid, gid, groups) of a user."""
    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid, set(os.getgrouplist(name, entry.pw_gid))


def can_enter(path, name):
    """Can user `name` search directory `path` (by its mode bits, as the kernel decides)?"""
    uid, _, groups = account(name)
    st = os.stat(path)
    if st.st_uid == uid:
        return bool(st.st_mode & 0o100)
    if st.st_gid in groups:
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


def _closed_ancestor(path, name):
    """(the first directory above `path` the user cannot enter, its child on the way), or None."""
    path = Path(path).resolve()
    for directory in reversed(path.parents):
        if not can_enter(directory, name):
            return directory, path.parts[:len(directory.parts) + 1]
    return None


def python_view(name="nobody"):
    """The prefix that lets user `name` read this Python's installation ([] when it can)."""
    found = _closed_ancestor(Path(sys.base_prefix) / "lib", name)
    if found is None:
        return []
    closed, parts = found
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _VIEW, "sh",
            str(Path(*parts)), str(closed)]


def as_user(name):
    return ["setpriv", "--reuid", name, "--regid", grp.getgrgid(account(name)[1]).gr_name, "--init-groups"]
