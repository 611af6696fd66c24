"""Helpers of the SMS transport tests: set an HSM's flags at its console, run a client over
either transport, and a forwarding proxy on 127.0.0.1 that captures (and may change) the
frames that cross the loopback."""

import socket
import threading

from ptkhsm import constants as C
from ptkhsm.config import Config
from ptkhsm.cryptoki.client import Cryptoki
from ptkhsm.hsm.core import HSM
from ptkhsm.mechparams import Mechanism
from ptkhsm.transport import local

SO, USER = b"12345678", b"87654321"
RW = C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION
ADMIN = 2
SECRET = bytes.fromhex("c0ffee00" * 8)
NEEDLE = b"needle-label-xyzzy"


def env_for(path, **items):
    env = {"ET_PTKC_SW_DATAPATH": str(path), "HOME": str(path), "ET_PTKC_SW_PIN_KDF_ITERATIONS": "1000",
           "ET_PTKC_EXTTOKEN_ENABLE": "0"}
    env.update({k: str(v) for k, v in items.items()})
    return env


def set_flags(env, flags, firmware=None, init_user=True):
    """At the HSM's console (the host): Admin Token initialised, its SO sets the flags;
    slot 0 initialised with the user PIN."""
    app = HSM(Config(env)).application()
    if not app.token_info(ADMIN)["flags"] & C.CKF_TOKEN_INITIALIZED:
        app.init_token(ADMIN, SO, b"")
    s = app.open_session(ADMIN, RW)
    app.login(s, C.CKU_SO, SO)
    app.find_init(s, [(C.CKA_CLASS, C.CKO_ADAPTER)])
    (handle,) = app.find(s, 2)
    app.find_final(s)
    changes = [(C.CKA_SECURITY_MODE, flags)]
    if firmware:
        changes.append((C.CKA_FW_VERSION, bytes(firmware)))
    app.set_attributes(s, handle, changes)
    if init_user and not app.token_info(0)["flags"] & C.CKF_TOKEN_INITIALIZED:
        app.init_token(0, SO, b"sms".ljust(32))
        s = app.open_session(0, RW)
        app.login(s, C.CKU_SO, SO)
        app.init_pin(s, USER)
    app.finalize()


def client(env, server=None, **items):
    env = dict(env, **{k: str(v) for k, v in items.items()})
    if server is not None:
        env["ET_HSM_NETCLIENT_SERVERLIST"] = server
    return Cryptoki(Config(env))


def workload(api):
    """Log in, create a secret key with a known value and label, use it, read it back."""
    s = api.open_session(0, RW)
    api.login(s, C.CKU_USER, USER)
    key = api.create_object(s, [(C.CKA_CLASS, C.CKO_SECRET_KEY), (C.CKA_KEY_TYPE, C.CKK_AES),
                                (C.CKA_VALUE, SECRET), (C.CKA_LABEL, NEEDLE), (C.CKA_ENCRYPT, True),
                                (C.CKA_SENSITIVE, False), (C.CKA_EXTRACTABLE, True)])
    api.encrypt_init(s, Mechanism(C.CKM_AES_ECB, None), key)
    out = api.encrypt(s, b"\0" * 16, 16)
    label, value = api.get_attributes(s, key, [C.CKA_LABEL, C.CKA_VALUE])
    assert (label, value) == (NEEDLE, SECRET)
    return s, key, out


class Tap:
    """In-process tap: sees (and may change) every frame of ptkhsm.transport.local."""

    def __init__(self, change=None):
        self.frames = []
        self.change = change

    def __call__(self, direction, frame):
        if self.change is not None:
            frame = self.change(direction, frame, len(self.frames))
        self.frames.append((direction, frame))
        return frame

    def __enter__(self):
        local.TAP = self
        return self

    def __exit__(self, *exc):
        local.TAP = None

    def bytes(self, direction=None):
        return b"".join(f for d, f in self.frames if direction in (None, d))


def _frames(sock):
    buf = b""
    while True:
        while len(buf) < 4 or len(buf) < 4 + int.from_bytes(buf[:4], "big"):
            chunk = sock.recv(65536)
            if not chunk:
                return
            buf += chunk
        n = 4 + int.from_bytes(buf[:4], "big")
        yield buf[:n]
        buf = buf[n:]


class Proxy:
    """A forwarding proxy on 127.0.0.1 (port chosen by the OS) in front of a TCP server:
    records every byte each way, frame by frame; `change(direction, frame, index)` may
    return a list of frames to send instead (empty: drop it)."""

    def __init__(self, target, change=None):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.change = change
        self.frames = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.conns += [conn, upstream]
            threading.Thread(target=self._pump, args=(conn, upstream, "request"), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, conn, "reply"), daemon=True).start()

    def _pump(self, src, dst, direction):
        try:
            for frame in _frames(src):
                with self.lock:
                    index = len(self.frames)
                    self.frames.append((direction, frame))
                out = [frame] if self.change is None else self.change(direction, frame, index)
                for f in out:
                    dst.sendall(f)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def bytes(self, direction=None):
        return b"".join(f for d, f in self.frames if direction in (None, d))

    def close(self):
        self.sock.close()
        for s in self.conns:
            try:
                s.close()
            except OSError:
                pass
