"""Reading frames off a stream socket (the server's side): one recv fills a buffer
that may hold several frames."""

import socket

from .. import wire
from .polling import Poll

_CHUNK = 1 << 16  # what one recv asks for, unless a longer frame's rest is known to be due


class FrameReader:
    """`poll` (seconds) and `may_poll()`: on a blocking socket, look for the next frame that
    long before sleeping in recv, while may_poll() holds (ptkhsm/transport/polling.py)."""

    def __init__(self, sock, limit=wire.MAX_FRAME, poll=0.0, may_poll=lambda: True):
        self.sock = sock
        self.limit = limit
        self.buf = bytearray()
        self.poll = Poll(poll)
        self.may_poll = may_poll

    def _fill(self, n, polling=False):
        buf = self.buf
        deadline = self.poll.deadline() if polling else None
        polling = deadline is not None
        while len(buf) < n:
            if polling:
                try:
                    chunk = self.sock.recv(max(_CHUNK, n - len(buf)), socket.MSG_DONTWAIT)
                except BlockingIOError:
                    polling = self.poll.again(deadline) and self.may_poll()
                    continue
            else:
                chunk = self.sock.recv(max(_CHUNK, n - len(buf)))
            if not chunk:
                raise EOFError("the peer closed the connection")
            buf += chunk

    def read(self, poll=False):
        """-> (type, body) of the next frame. Raises EOFError, OSError, wire.ProtocolError.
        poll: look for it first (on a blocking socket only: see the class)."""
        buf = self.buf
        if len(buf) < 4:
            self._fill(4, poll and self.may_poll())
        size = 4 + wire.frame_length(buf, self.limit)
        if len(buf) < size:
            self._fill(size)
        kind, body = buf[4], bytes(buf[5:size])
        del buf[:size]
        return kind, body
