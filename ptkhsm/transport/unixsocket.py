"""`ptkhsm serve --unix`: the socket file, and who may connect to it, checked twice.

The socket gets its owner, group and mode from the configuration
(ET_HSM_NETSERVER_SOCKET_OWNER, _GROUP, _MODE), so the kernel refuses
connect() to anyone else. The server checks the same rule again on each
peer's credentials, which the kernel records at connect() (SO_PEERCRED,
SO_PEERGROUPS): a socket chmod-ed by hand or a connection handed on does not
open the HSM to more users than the configuration names. The server's own
user (it owns the data directory anyway) is always let in.
"""

import errno
import grp
import os
import pwd
import socket
import stat
import struct
from dataclasses import dataclass

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13; Python 3.11 lacks the name
_GIDS_BUFFER = 1024  # bytes (256 groups), the most Python's getsockopt takes


def user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


@dataclass(frozen=True)
class Peer:
    """The process at the other end, as the kernel saw it at connect()."""
    pid: int
    uid: int
    gid: int
    groups: frozenset  # the primary group and the supplementary ones

    def __str__(self):  # for the logs: key=value, nothing secret
        return f"unix pid={self.pid} uid={self.uid} user={user_name(self.uid)} gid={self.gid}"


def peer_of(conn):
    pid, uid, gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return Peer(pid, uid, gid, frozenset(_peer_groups(conn, uid, gid)) | {gid})


def _peer_groups(conn, uid, gid):
    try:
        data = conn.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, _GIDS_BUFFER)
        return struct.unpack(f"{len(data) // 4}I", data[:len(data) // 4 * 4])
    except OSError:  # an older kernel, or more groups than the buffer: the user's groups as listed
        try:
            return os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
        except KeyError:
            return ()


@dataclass(frozen=True)
class Access:
    """The socket's path, owner, group and mode, and the rule they make."""
    path: str
    uid: int
    gid: int
    mode: int

    @classmethod
    def configured(cls, config, path):
        owner = config.get("ET_HSM_NETSERVER_SOCKET_OWNER")
        group = config.get("ET_HSM_NETSERVER_SOCKET_GROUP")
        return cls(os.path.abspath(path), os.geteuid() if owner is None else owner,
                   os.getegid() if group is None else group, config.get("ET_HSM_NETSERVER_SOCKET_MODE"))

    def refusal(self, peer):
        """None if the peer may use the HSM, else why not (told to the peer and logged).
        The file's rule: the owner's bits for the owner, else the group's for a member,
        else the others'; connect() needs write permission."""
        if peer.uid == os.geteuid():
            return None
        if peer.uid == self.uid:
            allowed, who = self.mode & 0o200, "its owner"
        elif self.gid in peer.groups:
            allowed, who = self.mode & 0o020, f"a member of its group {group_name(self.gid)}"
        else:
            allowed, who = self.mode & 0o002, (f"neither its owner {user_name(self.uid)} nor a member of "
                                               f"its group {group_name(self.gid)}")
        if allowed:
            return None
        return (f"permission denied by ptkhsm serve: user {user_name(peer.uid)} (uid {peer.uid}) is {who}, "
                f"and the HSM socket {self.path} (mode {self.mode:04o}) does not let it in "
                "(ET_HSM_NETSERVER_SOCKET_OWNER, _GROUP, _MODE)")

    def bind(self):
        """The listening socket at `path`, with its owner, group and mode set before anyone can
        connect. A missing parent directory is created 0755 (the socket's mode is the gate); an
        existing one is left as it is. Only a stale socket is replaced, never another file."""
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            os.makedirs(parent, exist_ok=True)
            os.chmod(parent, 0o755)
        try:
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise OSError(errno.EEXIST, f"{self.path} exists and is not a socket: not replaced")
            os.unlink(self.path)  # a stale socket of a stopped server
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o777)  # no access at all until owner, group and mode are set
        try:
            sock.bind(self.path)
        finally:
            os.umask(old)
        try:
            os.chown(self.path, self.uid, self.gid)
        except PermissionError:
            sock.close()
            os.unlink(self.path)
            raise PermissionError(errno.EPERM, f"cannot give the socket {self.path} to user {user_name(self.uid)} "
                                  f"and group {group_name(self.gid)} (ET_HSM_NETSERVER_SOCKET_OWNER, _GROUP): "
                                  "only root gives files away, and a user only to its own groups") from None
        os.chmod(self.path, self.mode)
        return sock
