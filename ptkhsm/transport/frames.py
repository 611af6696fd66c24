"""Reading frames off a stream socket (the server's side): one recv fills a buffer
that may hold several frames."""

from .. import wire

_CHUNK = 1 << 16  # what one recv asks for, unless a longer frame's rest is known to be due


class FrameReader:
    def __init__(self, sock, limit=wire.MAX_FRAME):
        self.sock = sock
        self.limit = limit
        self.buf = bytearray()

    def _fill(self, n):
        buf = self.buf
        while len(buf) < n:
            chunk = self.sock.recv(max(_CHUNK, n - len(buf)))
            if not chunk:
                raise EOFError("the peer closed the connection")
            buf += chunk

    def read(self):
        """-> (type, body) of the next frame. Raises EOFError, OSError, wire.ProtocolError."""
        buf = self.buf
        if len(buf) < 4:
            self._fill(4)
        size = 4 + wire.frame_length(buf, self.limit)
        if len(buf) < size:
            self._fill(size)
        kind, body = buf[4], bytes(buf[5:size])
        del buf[:size]
        return kind, body
