"""Reading frames off a stream socket, both sides: one recv fills a buffer that
may hold several frames, and `pending()` says whether another is already
there (the server runs a request inline when nothing else waits)."""

import select

from .. import wire


class FrameReader:
    def __init__(self, sock, limit=wire.MAX_FRAME):
        self.sock = sock
        self.limit = limit
        self.buf = bytearray()

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(min(max(65536, n - len(self.buf)), 1 << 20))
            if not chunk:
                raise EOFError("the peer closed the connection")
            self.buf += chunk

    def read(self):
        """-> (type, body) of the next frame. Raises EOFError, OSError, wire.ProtocolError."""
        self._fill(4)
        n = wire.frame_length(bytes(self.buf[:4]), self.limit)
        self._fill(4 + n)
        kind, body = self.buf[4], bytes(self.buf[5:4 + n])
        del self.buf[:4 + n]
        return kind, body

    def pending(self):
        if self.buf:
            return True
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)
