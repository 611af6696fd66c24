"""The client's side of a connection to `ptkhsm serve`.

A Channel connects (TCP or unix socket), does the handshake and then carries
calls. Each request has an id; there is no reader thread: a calling thread
that finds nobody reading reads the replies itself (handing each to the
thread waiting for it) until its own arrives, then wakes a waiting thread to
take over. One thread alone thus pays no thread hand-off, several run their
calls concurrently on the server, and nothing is left running at interpreter
exit. Socket failures become CKR_DEVICE_REMOVED (the server is gone); a
reply that breaks the protocol, CKR_DEVICE_ERROR.
"""

import socket
import threading
import time

from .. import constants as C
from .. import wire
from ..errors import CKRError
from . import smslink as link
from .frames import FrameReader

UNIX = "unix"  # the kind of a server-list entry (ptkhsm.config)
_NUDGE = 0.05  # seconds a waiting thread sleeps before it looks whether nobody is reading


class _Waiter:
    __slots__ = ("event", "kind", "body")

    def __init__(self):
        self.event = threading.Event()
        self.kind = self.body = None


class Channel:
    def __init__(self, address, connect_timeout, reply_timeout, sms=None):
        self.address = address
        self.link = None  # the SMS channel (ptkhsm/transport/smslink.py) when `sms` settings ask for one
        self.reply_timeout = reply_timeout or None
        self.broken = None  # the CKRError every call gets once the connection is lost
        try:
            if address[0] == UNIX:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(connect_timeout)
                sock.connect(address[1])
            else:
                sock = socket.create_connection((address[1], address[2]), timeout=connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(wire.hello())
            self.frames = FrameReader(sock)
            kind, body = self.frames.read()
            if kind == wire.ERROR:  # the server refused this peer (unixsocket.py): raises its CKRError
                wire.read_reply(kind, body, None)
            if kind != wire.WELCOME:
                raise wire.ProtocolError("no welcome")
            self.version, self.info = wire.read_welcome(body)
            serial = str(self.info.get("serial"))
            if sms is not None and sms.needed(serial, self.info.get("security_mode") or 0):
                self.link = link.ClientLink(sms, serial, lambda data: (sock.sendall(data), self.frames.read())[1])
        except (OSError, EOFError, wire.ProtocolError) as exc:
            raise CKRError(C.CKR_DEVICE_ERROR, f"cannot reach the HSM at {address}: {exc}") from None
        except CKRError:
            sock.close()
            raise
        sock.settimeout(self.reply_timeout)
        self.sock = sock
        self._send = threading.Lock()
        self._reading = threading.Lock()
        self._waiting = {}
        self._next = 0
        self._ids = threading.Lock()

    def call(self, call, args):
        if self.broken is not None:
            raise self.broken
        waiter = _Waiter()
        with self._ids:
            self._next = (self._next + 1) & 0xFFFFFFFF
            request_id = self._next
            self._waiting[request_id] = waiter
        try:
            data = wire.request(request_id, call.name, args)
        except (ValueError, TypeError) as exc:
            self._waiting.pop(request_id, None)
            raise CKRError(C.CKR_DATA_LEN_RANGE if isinstance(exc, ValueError) else C.CKR_ARGUMENTS_BAD,
                           f"{call.name}: {exc}") from None
        try:
            with self._send:
                if self.link is not None:
                    data = self.link.seal(call, request_id, data)
                self.sock.sendall(data)
        except OSError as exc:
            self._lose(f"send failed: {exc}")
            raise self.broken from None
        except CKRError as exc:   # SMS: the channel has ended
            self._lose(exc)
            raise self.broken from None
        self._await(waiter)
        if waiter.kind is None:
            raise self.broken
        try:
            return wire.read_reply(waiter.kind, waiter.body, call)[1]
        except wire.ProtocolError as exc:
            raise CKRError(C.CKR_DEVICE_ERROR, f"bad reply from the HSM: {exc}") from None

    def _await(self, waiter):
        deadline = None if self.reply_timeout is None else time.monotonic() + self.reply_timeout
        while waiter.kind is None and self.broken is None:
            if self._reading.acquire(blocking=False):
                try:
                    while waiter.kind is None and self.broken is None:
                        self._read_one()
                except (OSError, EOFError, wire.ProtocolError) as exc:
                    self._lose(f"no reply within {self.reply_timeout} s" if isinstance(exc, socket.timeout)
                               else str(exc))
                except CKRError as exc:   # SMS: a record failed, the channel (and connection) ends
                    self._lose(exc)
                finally:
                    self._reading.release()
                    with self._ids:
                        other = next(iter(self._waiting.values()), None)
                    if other is not None:
                        other.event.set()  # nobody reads now: that thread takes over
                return
            waiter.event.wait(_NUDGE)
            waiter.event.clear()
            if deadline is not None and time.monotonic() > deadline and waiter.kind is None:
                self._lose(f"no reply within {self.reply_timeout} s")

    def _read_one(self):
        kind, body = self.frames.read()
        if self.link is not None:
            kind, body = self.link.open(kind, body)
        if len(body) < 4 or kind not in (wire.REPLY, wire.ERROR):
            raise wire.ProtocolError(f"unexpected frame type {kind}")
        request_id = int.from_bytes(body[:4], "big")
        with self._ids:
            waiter = self._waiting.pop(request_id, None)
        if waiter is not None:
            waiter.kind, waiter.body = kind, body
            waiter.event.set()

    def send_only(self, call, args):
        """A request whose reply nobody waits for (C_Finalize)."""
        if self.broken is None:
            try:
                with self._send:
                    self.sock.sendall(wire.request(0, call.name, args))
            except OSError:
                pass

    def _lose(self, why):
        """The connection is gone: every pending and later call fails."""
        if self.broken is None:
            self.broken = why if isinstance(why, CKRError) else CKRError(
                C.CKR_DEVICE_REMOVED, f"lost the HSM at {self.address}: {why}")
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        with self._ids:
            waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            waiter.event.set()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
