"""`ptkhsm serve`: the HSM behind a TCP or unix-domain socket.

The parent process binds the socket, forks the workers and waits for
SIGTERM/SIGINT. Each worker opens the data directory itself (the store keeps
several writer processes exact) and accepts connections on the shared
socket, so the kernel spreads clients over the workers and both cores are
used. Each connection is one application in one worker: a thread reads its
frames and runs its requests on a small pool, so one client's threads run
concurrently. A frame that breaks the protocol closes only its connection,
with a log line; logs name calls and peers, never arguments.
"""

import ctypes
import os
import signal
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from .. import constants as C
from .. import wire
from ..config import NETSERVER_PORT
from ..errors import CKRError
from ..hsm.core import HSM
from ..log import logger
from .frames import FrameReader
from .handler import Handler
from .unixsocket import Access, peer_of

DEFAULT_PORT = NETSERVER_PORT
REQUEST_THREADS = 8   # requests of one worker running at once
HANDSHAKE_TIMEOUT = 10.0  # seconds from accept to the client's hello


def parse_listen(text):
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(DEFAULT_PORT)
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port)
    except ValueError:
        raise ValueError(f"--listen {text!r}: the port is not a number") from None
    return host, port


def bind(listen=None, unix=None, access=None):
    if unix:
        sock = access.bind()  # owner, group and mode of the configuration (unixsocket.py)
        where = f"unix {unix}"
    else:
        host, port = parse_listen(listen or "")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        host, port = sock.getsockname()[:2]
        where = f"tcp {host}:{port}"
    sock.listen(128)
    return sock, where


class Worker:
    """One worker process: its HSM, its connections."""

    def __init__(self, config, sock, max_frame, access=None):
        self.config = config
        self.sock = sock
        self.access = access  # who may connect to the unix socket (None: TCP)
        self.max_frame = max_frame
        self.hsm = HSM(config)
        self.pool = ThreadPoolExecutor(REQUEST_THREADS, thread_name_prefix="ptkhsm-req")
        self.stopping = threading.Event()
        self.connections = set()
        self.lock = threading.Lock()

    def run(self):
        self.sock.settimeout(0.25)  # look at `stopping` between accepts
        while not self.stopping.is_set():
            try:
                conn, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self.stopping.is_set():
                    break
                raise
            conn.settimeout(HANDSHAKE_TIMEOUT)  # a peer that never says hello does not hold a thread
            if conn.family != socket.AF_UNIX:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if conn.family == socket.AF_UNIX:
                try:
                    peer = peer_of(conn)
                except OSError:  # gone already
                    conn.close()
                    continue
                refusal = self.access.refusal(peer) if self.access else None
                if refusal:
                    threading.Thread(target=self.refuse, args=(conn, peer, refusal), daemon=True).start()
                    continue
            else:
                peer = f"{peer[0]}:{peer[1]}"
            threading.Thread(target=self.serve, args=(conn, str(peer)), daemon=True).start()
        self.stop_connections()

    @staticmethod
    def refuse(conn, peer, reason):
        """A peer the socket's configuration does not let in (the file's mode was changed by
        hand, or the connection handed on): its hello is answered by an ERROR frame with the
        reason, which its C_Initialize reports; no application, nothing of the HSM."""
        logger.warning("refused connection from %s: %s", peer, reason)
        try:
            FrameReader(conn, 64).read()  # the hello, within the handshake time-out
            conn.sendall(wire.error(0, CKRError(C.CKR_DEVICE_ERROR, reason)))
        except (OSError, EOFError, wire.ProtocolError):
            pass
        finally:
            conn.close()

    def serve(self, conn, peer):
        handler = Handler(self.hsm, peer)
        write = threading.Lock()
        frames = FrameReader(conn, self.max_frame)
        running = set()  # the futures of this connection's requests on the pool
        with self.lock:
            self.connections.add(conn)
        logger.info("connection from %s (worker %d)", peer, os.getpid())
        reason = "closed by the client"
        try:
            while True:
                try:
                    kind, body = frames.read()
                except EOFError:
                    break
                if handler.app is None:
                    self._send(conn, write, handler.handle(kind, body))
                    conn.settimeout(None)  # an application may sit idle as long as it likes
                    continue
                if kind != wire.REQUEST or not (running or frames.buffered()):
                    # nothing else in flight or waiting: run it here, without a thread hand-off
                    self._send(conn, write, handler.handle(kind, body))
                    continue
                future = self.pool.submit(self._run, handler, conn, write, kind, body)
                running.add(future)
                future.add_done_callback(running.discard)
        except wire.ProtocolError as exc:
            reason = f"protocol error: {exc}"
            logger.warning("closing connection from %s: %s", peer, exc)
            if getattr(exc, "frame", None):  # SMS: the client learns why its channel ended
                self._send(conn, write, exc.frame)
        except OSError as exc:
            reason = f"socket error: {exc.strerror or exc}"
        finally:
            for future in list(running):
                try:
                    future.result()
                except Exception:
                    pass
            with self.lock:
                self.connections.discard(conn)
            try:
                conn.close()
            except OSError:
                pass
            handler.close()
            logger.info("connection from %s ended: %s", peer, reason)

    def _run(self, handler, conn, write, kind, body):
        try:
            reply = handler.handle(kind, body)
        except wire.ProtocolError as exc:
            logger.warning("closing connection from %s: %s", handler.peer, exc)
            conn.shutdown(socket.SHUT_RDWR)
            return
        self._send(conn, write, reply)

    @staticmethod
    def _send(conn, write, data):
        with write:
            try:
                conn.sendall(data)
            except OSError:
                pass  # the reader sees the connection end and cleans up

    def stop_connections(self):
        with self.lock:
            connections = list(self.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _die_with_parent(parent):
    """A worker never outlives the server (`kill -9` of the server ends its workers):
    Linux's PR_SET_PDEATHSIG, then a check that the parent did not die before it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(0)


def _worker_main(config, sock, max_frame, ready, parent, access=None):
    _die_with_parent(parent)
    worker = Worker(config, sock, max_frame, access)
    os.write(ready, b"1")
    os.close(ready)

    def stop(signum, frame):
        worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        worker.run()
        worker.pool.shutdown(wait=True)
    finally:
        os._exit(0)


def serve(config, listen=None, unix=None, workers=None, out=sys.stdout):
    """Run the server until SIGTERM/SIGINT; prints one readiness line on `out`."""
    workers = workers or config.get("ET_HSM_NETSERVER_WORKERS") or os.cpu_count() or 1
    access = Access.configured(config, unix) if unix else None
    sock, where = bind(listen, unix, access)
    stopping = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stopping.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    children = []
    ready_r, ready_w = os.pipe()
    parent = os.getpid()
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            for s in previous:
                signal.signal(s, signal.SIG_DFL)
            _worker_main(config, sock, wire.MAX_FRAME, ready_w, parent, access)
        children.append(pid)
    os.close(ready_w)
    started = 0
    while started < workers:  # each worker has opened the data directory
        got = os.read(ready_r, workers)
        if not got:
            break
        started += len(got)
    os.close(ready_r)
    if started < workers:
        logger.error("a worker failed to start: see its log above")
        stopping.set()
    else:
        print(f"ptkhsm serve: ready on {where} (pid {os.getpid()}, {workers} workers)", file=out, flush=True)
        logger.info("serving on %s with %d workers", where, workers)
    try:
        while not stopping.is_set():
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                children.remove(pid)
                logger.error("worker %d ended (status %d)", pid, status)
                if not children:
                    break
            stopping.wait(0.2)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        sock.close()
        if unix:
            try:
                os.unlink(unix)
            except OSError:
                pass
        for s, handler in previous.items():
            signal.signal(s, handler)
        logger.info("stopped")
    return 0 if started == workers else 1
