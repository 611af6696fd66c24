"""The client's side of a connection to `ptkhsm serve`.

A Channel connects (TCP or unix socket), does the handshake and then carries
calls: each request has an id, a reader thread hands each reply to the
thread waiting for it, so the threads of one application run their calls
concurrently on the server. Socket failures become CKR_DEVICE_REMOVED (the
server is gone); a reply that breaks the protocol, CKR_DEVICE_ERROR.
"""

import socket
import threading

from .. import constants as C
from .. import wire
from ..errors import CKRError

_SLICE = 0.5  # seconds between looks at the reader thread while a call waits
UNIX = "unix"  # the kind of a server-list entry (ptkhsm.config)


def _recv_exact(sock, n):
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_frame(sock):
    n = wire.frame_length(_recv_exact(sock, 4))
    data = _recv_exact(sock, n)
    return data[0], data[1:]


class _Waiter:
    __slots__ = ("event", "kind", "body")

    def __init__(self):
        self.event = threading.Event()
        self.kind = self.body = None


class Channel:
    def __init__(self, address, connect_timeout, reply_timeout):
        self.address = address
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
            kind, body = _read_frame(sock)
            if kind != wire.WELCOME:
                raise wire.ProtocolError("no welcome")
            self.version, self.info = wire.read_welcome(body)
        except (OSError, wire.ProtocolError) as exc:
            raise CKRError(C.CKR_DEVICE_ERROR, f"cannot reach the HSM at {address}: {exc}") from None
        sock.settimeout(None)
        self.sock = sock
        self._send = threading.Lock()
        self._waiting = {}
        self._next = 0
        self._ids = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="ptkhsm-netclient", daemon=True)
        self._reader.start()

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
                self.sock.sendall(data)
        except OSError as exc:
            self._lose(f"send failed: {exc}")
            raise self.broken from None
        waited = 0.0
        while not waiter.event.wait(_SLICE):
            waited += _SLICE
            if not self._reader.is_alive():  # interpreter exit stops daemon threads
                self._lose("the client library is shutting down")
                break
            if self.reply_timeout and waited >= self.reply_timeout:
                self._lose(f"no reply to {call.name} within {self.reply_timeout} s")
                break
        if waiter.kind is None:
            raise self.broken
        try:
            return wire.read_reply(waiter.kind, waiter.body, call)[1]
        except wire.ProtocolError as exc:
            raise CKRError(C.CKR_DEVICE_ERROR, f"bad reply from the HSM: {exc}") from None

    def send_only(self, call, args):
        """A request whose reply nobody waits for (C_Finalize)."""
        if self.broken is None:
            try:
                with self._send:
                    self.sock.sendall(wire.request(0, call.name, args))
            except OSError:
                pass

    def _read(self):
        try:
            while True:
                kind, body = _read_frame(self.sock)
                if len(body) < 4 or kind not in (wire.REPLY, wire.ERROR):
                    raise wire.ProtocolError(f"unexpected frame type {kind}")
                request_id = int.from_bytes(body[:4], "big")
                with self._ids:
                    waiter = self._waiting.pop(request_id, None)
                if waiter is not None:
                    waiter.kind, waiter.body = kind, body
                    waiter.event.set()
        except (OSError, wire.ProtocolError) as exc:
            self._lose(str(exc))

    def _lose(self, why):
        """The connection is gone: every pending and later call fails."""
        if self.broken is None:
            self.broken = CKRError(C.CKR_DEVICE_REMOVED, f"lost the HSM at {self.address}: {why}")
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
