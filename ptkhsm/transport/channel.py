"""The client's side of a connection to `ptkhsm serve`.

A Channel connects (TCP or unix socket), does the handshake and then carries
calls. Each request has an id; there is no reader thread: a calling thread
that finds nobody reading reads the replies itself (handing each to the
thread waiting for it) until its own arrives, then wakes a waiting thread to
take over. One thread alone thus pays no thread hand-off, several run their
calls concurrently on the server, and nothing is left running at interpreter
exit. Socket failures become CKR_DEVICE_REMOVED (the server is gone); a
reply that breaks the protocol, CKR_DEVICE_ERROR.

Re-entrant on one thread: the host's garbage collector can run a finalizer
that makes a PKCS#11 call (python-pkcs11 ends an abandoned operation so) at
any point of a call, on the thread making it. The nested call must neither
wait for a lock its own thread holds nor read a frame half taken off the
socket. So the locks a thread holds across Python code are re-entrant, a
waiter sleeps on a plain lock of its own, and a frame leaves the socket in
one recv (its header peeked first): at any point where a nested call can
start, the socket holds whole frames only and the reader state is the
socket's, so the nested call can read the replies itself, as any reader
does, while the outer call sleeps under it.

With Secure Messaging (ptkhsm/transport/smslink.py) frames are sealed in send
order and opened in receive order. A finalizer's call landing between the
sealing and the sending of its thread's frame, or between the taking and the
opening of one, puts a record out of order: the channel ends (CKR_SMS_ERROR),
closed rather than open (docs/sms.md).
"""
import collections
import functools
import itertools
import operator
import socket
import struct
import threading
import time

from .. import constants as C
from .. import wire
from ..errors import CKRError
from . import smslink as link

UNIX = "unix"  # the kind of a server-list entry (ptkhsm.config)
_NUDGE = 0.05  # seconds a waiting thread sleeps before it looks whether nobody is reading
_HEADER = 4    # a frame's length prefix
_PEEK = socket.MSG_PEEK | socket.MSG_WAITALL


class _Waiter:
    __slots__ = ("wake", "kind", "body")

    def __init__(self):
        self.wake = threading.Lock()  # released when the reply (or the loss) is there
        self.wake.acquire()
        self.kind = self.body = None


def _wake(waiter):
    try:
        waiter.wake.release()
    except RuntimeError:
        pass  # woken already


def _timeval(seconds):
    seconds = seconds or 0  # 0: no limit
    return struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))


class Channel:
    def __init__(self, address, connect_timeout, reply_timeout, sms=None):
        self.address = address
        self.link = None  # the SMS channel (ptkhsm/transport/smslink.py) when `sms` settings ask for one
        self.reply_timeout = reply_timeout or None
        self.broken = None  # the CKRError every call gets once the connection is lost
        self._taken = 0     # frames taken off the socket (by the reading thread, or a call nested in it)
        self._new_id = itertools.count(1).__next__
        self._waiting = {}  # request id -> _Waiter
        # Re-entrant only for a signal handler's call made mid-send: it breaks that frame and the
        # server closes the connection (a lost HSM, which HA mode survives) instead of a hang.
        self._send = threading.RLock()
        self._reading = threading.RLock()
        sock = None
        try:
            if address[0] == UNIX:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(connect_timeout)
                sock.connect(address[1])
            else:
                sock = socket.create_connection((address[1], address[2]), timeout=connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Blocking, with the time-outs in the kernel: only so does recv(MSG_WAITALL) take a
            # whole frame in one call (Python's time-out mode makes the socket non-blocking).
            sock.settimeout(None)
            self.sock = sock
            self._timeouts(connect_timeout)
            sock.sendall(wire.hello())
            kind, body = self._read_frame(None)
            if kind == wire.ERROR:  # the server refused this peer (unixsocket.py): raises its CKRError
                wire.read_reply(kind, body, None)
            if kind != wire.WELCOME:
                raise wire.ProtocolError("no welcome")
            self.version, self.info = wire.read_welcome(body)
            serial = str(self.info.get("serial"))
            if sms is not None and sms.needed(serial, self.info.get("security_mode") or 0):
                self.link = link.ClientLink(sms, serial, lambda data: (sock.sendall(data), self._read_frame(None))[1])
            self._timeouts(self.reply_timeout)
        except (OSError, EOFError, wire.ProtocolError) as exc:
            if sock is not None:
                sock.close()
            raise CKRError(C.CKR_DEVICE_ERROR, f"cannot reach the HSM at {address}: {exc}") from None
        except CKRError:
            sock.close()
            raise

    def _timeouts(self, seconds):
        for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
            self.sock.setsockopt(socket.SOL_SOCKET, option, _timeval(seconds))

    def call(self, call, args):
        if self.broken is not None:
            raise self.broken
        request_id = self._new_id() & 0xFFFFFFFF
        try:
            data = wire.request(request_id, call.name, args)
        except (ValueError, TypeError) as exc:
            raise CKRError(C.CKR_DATA_LEN_RANGE if isinstance(exc, ValueError) else C.CKR_ARGUMENTS_BAD,
                           f"{call.name}: {exc}") from None
        waiter = self._waiting[request_id] = _Waiter()
        try:
            if self.link is None:
                self._sendall(data)
            else:
                with self._send:  # sealed in the order the frames go out
                    self.sock.sendall(self.link.seal(call, request_id, data))
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

    def _sendall(self, data):
        """Send one frame whole, holding the send lock only inside C code: the acquire, the
        send and the release are called from C (a deque draining a map), with no bytecode
        between them, so no finalizer can start on this thread while it holds the lock (it
        would keep every other thread's frame back while its own call waited)."""
        try:
            collections.deque(map(operator.call, (self._send.acquire, functools.partial(self.sock.sendall, data),
                                                  self._send.release)), maxlen=0)
        except OSError:
            self._send.release()  # the send failed: the release was not reached
            raise

    def _await(self, waiter):
        deadline = None if self.reply_timeout is None else time.monotonic() + self.reply_timeout
        while waiter.kind is None and self.broken is None:
            # Re-entrant: a call nested in the reading thread's (a finalizer) reads on.
            if self._reading.acquire(blocking=False):
                try:
                    while waiter.kind is None and self.broken is None:
                        frame = self._read_frame(waiter)
                        if frame is not None:
                            self._deliver(*(frame if self.link is None else self.link.open(*frame)))
                except (OSError, EOFError, wire.ProtocolError) as exc:
                    timed_out = isinstance(exc, (socket.timeout, BlockingIOError))
                    self._lose(f"no reply within {self.reply_timeout} s" if timed_out else str(exc))
                except CKRError as exc:   # SMS: a record failed, the channel (and connection) ends
                    self._lose(exc)
                finally:
                    self._reading.release()
                    others = list(self._waiting.values())
                    if others:
                        _wake(others[0])  # nobody reads now: that thread takes over
                return
            waiter.wake.acquire(timeout=_NUDGE)
            if deadline is not None and time.monotonic() > deadline and waiter.kind is None:
                self._lose(f"no reply within {self.reply_timeout} s")

    def _read_frame(self, waiter):
        """-> (type, body) of the next frame, taken off the socket in one recv; or None when
        `waiter` got its reply, or a nested call took frames, since the caller looked."""
        taken = self._taken
        # From here to the recv that takes the frame nothing can start a nested call (no call,
        # no allocation the collector counts) but the peek itself, after which `taken` is checked.
        if waiter is not None and waiter.kind is not None:
            return None
        head = self.sock.recv(_HEADER, _PEEK)
        deadline = None
        while len(head) < _HEADER:
            if not head:
                raise EOFError("the peer closed the connection")
            # A unix socket's peek does not wait for the rest of a header (frames are sent
            # whole, so this is rare): look again shortly, within the reply time-out.
            deadline = deadline or time.monotonic() + (self.reply_timeout or 86400)
            if time.monotonic() > deadline:
                raise socket.timeout("a frame header cut short")
            time.sleep(0.001)
            if self._taken != taken:
                return None
            head = self.sock.recv(_HEADER, _PEEK)
        size = _HEADER + wire.frame_length(head, wire.MAX_FRAME)
        if self._taken != taken:
            return None
        data = self.sock.recv(size, socket.MSG_WAITALL)
        self._taken += 1
        while len(data) < size:  # cut short by a signal, the time-out or the end of the stream
            more = self.sock.recv(size - len(data), socket.MSG_WAITALL)
            if not more:
                raise EOFError("the peer closed the connection")
            data += more
        return data[_HEADER], data[_HEADER + 1:]

    def _deliver(self, kind, body):
        if len(body) < 4 or kind not in (wire.REPLY, wire.ERROR):
            raise wire.ProtocolError(f"unexpected frame type {kind}")
        waiter = self._waiting.pop(int.from_bytes(body[:4], "big"), None)
        if waiter is not None:
            waiter.body = body
            waiter.kind = kind  # last: a waiter that sees its kind finds its body
            _wake(waiter)

    def send_only(self, call, args):
        """A request whose reply nobody waits for (C_Finalize)."""
        if self.broken is None:
            try:
                self._sendall(wire.request(0, call.name, args))
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
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            _wake(waiter)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
