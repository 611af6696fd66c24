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
waiter sleeps on a plain lock of its own, and the bytes a recv takes are the
channel's before any Python code runs: the recv and the appending of its
bytes to the channel's buffer are one chain of C calls, and a frame is cut
off the buffer by bytecode that calls nothing, after a look that no other
call took one meanwhile. So at any point where a nested call can start, the
socket and the buffer together hold the stream, and the nested call can read
the replies itself, as any reader does, while the outer call sleeps under it.

The round trip is spent outside the GIL, so a call opens libptkhsm.so's call
gate (ptkhsm.gate) once its request is sent: the application's other threads
make their calls meanwhile, and their requests reach the server together.

With Secure Messaging (ptkhsm/transport/smslink.py) frames are sealed in send
order and opened in receive order, each under its direction's lock. So no
garbage collection runs (ptkhsm/transport/collector.py) from before a frame
is sealed until it is sent, nor from before a reply is read until it is
opened: a finalizer's call there would wait forever for the lock its own
thread holds, or put a record out of order. A signal handler's call there
still puts one out of order: the channel ends (CKR_SMS_ERROR), closed rather
than open (docs/sms.md).
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
from .. import gate
from .. import wire
from ..errors import CKRError
from . import collector
from . import smslink as link
from .polling import Poll

UNIX = "unix"  # the kind of a server-list entry (ptkhsm.config)
_NUDGE = 0.05  # seconds a waiting thread sleeps before it looks whether nobody is reading
_HEADER = 4    # a frame's length prefix
_CHUNK = 1 << 16  # what one recv asks for, unless a longer frame's rest is known to be due
_ID = struct.Struct(">I")  # the request id that starts a reply's body


class _Waiter:
    """A call waiting for its reply; made without an __init__ (one per call)."""
    wake = None  # a lock, once its thread goes to sleep: released when the reply (or the loss) is there
    kind = body = None


def _wake(waiter):
    wake = waiter.wake
    if wake is not None:
        try:
            wake.release()
        except RuntimeError:
            pass  # woken already


def _timeval(seconds):
    seconds = seconds or 0  # 0: no limit
    return struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))


class Channel:
    def __init__(self, address, connect_timeout, reply_timeout, sms=None, poll=0.0):
        self.address = address
        self._poll = Poll(poll)  # how long a lone call looks for its reply before it sleeps in recv
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
        self._buf = bytearray()  # bytes taken off the socket, not yet cut into frames (by the reading thread)
        self._sink = collections.deque(maxlen=0)  # runs a chain of C calls to its end
        sock = None
        try:
            if address[0] == UNIX:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(connect_timeout)
                sock.connect(address[1])
            else:
                sock = socket.create_connection((address[1], address[2]), timeout=connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Blocking, with the time-outs in the kernel: a recv is one system call (Python's
            # time-out mode polls first) and recv(MSG_WAITALL) takes a long frame's rest at once.
            sock.settimeout(None)
            self.sock = sock
            self._recv = (functools.partial(sock.recv, _CHUNK),)
            self._recv_now = (functools.partial(sock.recv, _CHUNK, socket.MSG_DONTWAIT),)
            self._timeouts(connect_timeout)
            sock.sendall(wire.hello())
            kind, body = self._next_frame()
            if kind == wire.ERROR:  # the server refused this peer (unixsocket.py): raises its CKRError
                wire.read_reply(kind, body, None)
            if kind != wire.WELCOME:
                raise wire.ProtocolError("no welcome")
            self.version, self.info = wire.read_welcome(body)
            serial = str(self.info.get("serial"))
            if sms is not None and sms.needed(serial, self.info.get("security_mode") or 0):
                self.link = link.ClientLink(sms, serial, lambda data: (sock.sendall(data), self._next_frame())[1])
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
                collector.hold()
                try:
                    with self._send:  # sealed in the order the frames go out
                        self.sock.sendall(self.link.seal(call, request_id, data))
                finally:
                    collector.release()
        except OSError as exc:
            self._lose(f"send failed: {exc}")
            raise self.broken from None
        except CKRError as exc:   # SMS: the channel has ended
            self._lose(exc)
            raise self.broken from None
        gate.let_others_in()  # the reply takes a round trip: the application's other threads go on meanwhile
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
            self._sink.extend(map(operator.call, (self._send.acquire, functools.partial(self.sock.sendall, data),
                                                  self._send.release)))
        except OSError:
            self._send.release()  # the send failed: the release was not reached
            raise

    def _await(self, waiter):
        deadline = None
        while waiter.kind is None and self.broken is None:
            # Re-entrant: a call nested in the reading thread's (a finalizer) reads on.
            if self._reading.acquire(blocking=False):
                try:
                    while waiter.kind is None and self.broken is None:
                        frame = self._read_frame(waiter) if self.link is None else self._read_sealed(waiter)
                        if frame is None:
                            continue
                        kind, body = frame
                        if len(body) < 4 or (kind != wire.REPLY and kind != wire.ERROR):
                            raise wire.ProtocolError(f"unexpected frame type {kind}")
                        got = self._waiting.pop(_ID.unpack_from(body)[0], None)
                        if got is not None:  # hand it to the call waiting for it (this one's, or another's)
                            got.body = body
                            got.kind = kind  # last: a waiter that sees its kind finds its body
                            if got.wake is not None:
                                _wake(got)
                except (OSError, EOFError, wire.ProtocolError) as exc:
                    timed_out = isinstance(exc, (socket.timeout, BlockingIOError))
                    self._lose(f"no reply within {self.reply_timeout} s" if timed_out else str(exc))
                except CKRError as exc:   # SMS: a record failed, the channel (and connection) ends
                    self._lose(exc)
                finally:
                    self._reading.release()
                    # Nobody reads now: a waiting thread takes over. One list() of the waiters, not
                    # a look and then an index: between the two another thread, or a call nested
                    # here, may take the last reply (an IndexError, once in a fresh-clone make test).
                    for waiter in list(self._waiting.values())[:1]:
                        _wake(waiter)
                return
            if waiter.wake is None:
                # About to sleep: a lock to be woken by, then one more look (the reader may have
                # left before it could see the lock, and a reply may have come meanwhile).
                wake = threading.Lock()
                wake.acquire()
                waiter.wake = wake
                deadline = None if self.reply_timeout is None else time.monotonic() + self.reply_timeout
                continue
            waiter.wake.acquire(timeout=_NUDGE)
            if deadline is not None and time.monotonic() > deadline and waiter.kind is None:
                self._lose(f"no reply within {self.reply_timeout} s")

    def _read_sealed(self, waiter):
        """_read_frame and the opening of what it read, with no collection in between."""
        collector.hold()
        try:
            frame = self._read_frame(waiter)
            return None if frame is None else self.link.open(*frame)
        finally:
            collector.release()

    def _next_frame(self):
        """The next frame, while the connection is this thread's alone (the handshakes)."""
        while True:
            frame = self._read_frame(None)
            if frame is not None:
                return frame

    def _read_frame(self, waiter):
        """-> (type, body) of the next frame; or None when `waiter` got its reply, or a nested
        call took frames, since the caller looked (it looks again).

        A nested call may start at any call below and take frames (whole ones, from the
        front). So the header is read from a copy (slicing calls nothing), what is read
        off the buffer counts only after a look that no frame was taken since (and nothing
        indexes it before such a look: it may be shorter than it was), and the buffer is
        changed only after that look, by bytecode that calls nothing and allocates nothing
        the collector counts."""
        taken = self._taken
        buf = self._buf
        # A lone call looks for its reply for `poll` seconds before it sleeps: waking a
        # sleeping thread takes longer than a short call's round trip (docs/network.md).
        deadline = self._poll.deadline() if waiter is not None and len(self._waiting) == 1 else None
        polling = deadline is not None
        while True:
            head = buf[:_HEADER]
            size = _HEADER + wire.frame_length(head, wire.MAX_FRAME) if len(head) == _HEADER else 0
            rest = 0
            if size:
                if len(buf) >= size:
                    if self._taken != taken:   # len() returned to a nested call that took frames
                        return None
                    kind, body, cut = buf[_HEADER], bytes(buf[_HEADER + 1:size]), slice(0, size)
                    if self._taken != taken:
                        return None
                    del buf[cut]
                    self._taken = taken + 1
                    return kind, body
                rest = size - len(buf)
            if rest > _CHUNK:
                recv = (functools.partial(self.sock.recv, rest, socket.MSG_WAITALL),)
            else:
                recv = self._recv_now if polling else self._recv
            feed = map(buf.extend, map(operator.call, recv))
            before = len(buf)
            if self._taken != taken or (waiter is not None and waiter.kind is not None):
                return None
            # From the look to the recv, whose bytes join the buffer in C, the same holds.
            try:
                self._sink.extend(feed)
            except BlockingIOError:  # nothing yet (polling): nothing was taken either
                polling = self._poll.again(deadline)
                continue
            if len(buf) == before and self._taken == taken:
                raise EOFError("the peer closed the connection")

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
