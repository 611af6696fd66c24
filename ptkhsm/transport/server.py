"""`ptkhsm serve`: the HSM behind a TCP or unix-domain socket.

The parent process binds the socket, forks the workers and waits for
SIGTERM/SIGINT. Each worker opens the data directory itself (the store keeps
several writer processes exact) and accepts connections on the shared
socket, so the kernel spreads clients over the workers and both cores are
used. Each connection is one application in one worker: a thread reads its
frames and runs each request itself, with no thread hand-off (a hand-off per
request costs a short call more than the call: both threads take the GIL
from each other). A request that is about to be long (the engine opens the
call gate there: ptkhsm.gate, an RSA private-key operation, a PIN's KDF, a
durable write) passes the reading on to another thread first and finishes
on its own, so it holds up neither the connection's other requests nor a
core. A frame that breaks the protocol closes only its connection, with a
log line; logs name calls and peers, never arguments.
"""

import ctypes
import functools
import os
import queue
import signal
import socket
import sys
import threading

from .. import constants as C
from .. import gate
from .. import wire
from ..config import NETSERVER_PORT
from ..errors import CKRError
from ..hsm.core import HSM
from ..log import logger
from .frames import FrameReader
from .handler import Handler
from .unixsocket import Access, peer_of

DEFAULT_PORT = NETSERVER_PORT
LONG_REQUESTS = 8   # long requests of one worker running at once, besides its connections' readers
HANDSHAKE_TIMEOUT = 10.0  # seconds from accept to the client's hello
STOP_TIMEOUT = 10.0  # seconds a stopping worker waits for its connections' requests to finish
SPARE_SECONDS = 10.0  # how long an idle thread waits to take up a connection's reading


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


class _Threads:
    """Threads for connections' reading: one that is done waits SPARE_SECONDS for the next
    (a thread start costs about as much as a short request, and a long one hands the
    reading on each time)."""

    def __init__(self):
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._spare = 0  # waiting threads no job has been put for yet

    def run(self, job):
        with self._lock:
            if self._spare:
                self._spare -= 1
                self._jobs.put(job)
                return
        threading.Thread(target=self._loop, args=(job,), daemon=True).start()

    def _loop(self, job):
        while True:
            job()
            with self._lock:
                self._spare += 1
            try:
                job = self._jobs.get(timeout=SPARE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._spare:  # no job was put for this thread: it ends
                        self._spare -= 1
                        return
                job = self._jobs.get()  # one was counted on it, and is on its way


class _Connection:
    """One connection of a worker: its application, its frames, its long requests."""

    def __init__(self, worker, sock, peer):
        self.sock = sock
        self.peer = peer
        self.handler = Handler(worker.hsm, peer)
        self.frames = FrameReader(sock, worker.max_frame, worker.poll, worker.idle)
        self.write = threading.Lock()
        self.finished = threading.Condition()
        self.long = 0  # its requests running on threads that passed the reading on

    def send(self, data):
        with self.write:
            try:
                self.sock.sendall(data)
            except OSError:
                pass  # the reader sees the connection end and cleans up


_reading = threading.local()  # .connection: the one whose request this thread runs as its reader


class Worker:
    """One worker process: its HSM, its connections."""

    def __init__(self, config, sock, max_frame, access=None):
        self.config = config
        self.sock = sock
        self.access = access  # who may connect to the unix socket (None: TCP)
        self.max_frame = max_frame
        self.hsm = HSM(config)
        self.threads = _Threads()
        self.long_slots = threading.BoundedSemaphore(LONG_REQUESTS)
        self.stopping = threading.Event()
        self.connections = set()
        # the reading threads running a request now (ids: a connection's next reader may start
        # one before the thread that passed the reading on has finished its own)
        self.running = set()
        self.poll = config.get("ET_HSM_NETSERVER_POLL_US") / 1e6
        self.lock = threading.Condition()
        gate.install(self.pass_reading_on)

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
            connection = _Connection(self, conn, str(peer))
            with self.lock:
                self.connections.add(connection)
            logger.info("connection from %s (worker %d)", peer, os.getpid())
            self.threads.run(functools.partial(self.read, connection))
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

    def read(self, connection):
        """Read and answer the connection's frames on this thread until it ends, or until one
        of its requests passes the reading on (this thread then finishes that one and is done)."""
        reason = "closed by the client"
        try:
            while self.answer(connection):
                pass
            return
        except EOFError:
            pass
        except wire.ProtocolError as exc:
            reason = f"protocol error: {exc}"
            logger.warning("closing connection from %s: %s", connection.peer, exc)
            if getattr(exc, "frame", None):  # SMS: the client learns why its channel ended
                connection.send(exc.frame)
        except OSError as exc:
            reason = f"socket error: {exc.strerror or exc}"
        self.end(connection, reason)

    def idle(self):
        """No request runs on a reading thread: one may poll for its next frame (a poller
        takes the GIL from a request at every look)."""
        return not self.running

    def answer(self, connection):
        """Read one frame and answer it -> False when its request passed the reading on."""
        handler = connection.handler
        kind, body = connection.frames.read(poll=handler.app is not None)
        if handler.app is None:
            connection.send(handler.handle(kind, body))
            connection.sock.settimeout(None)  # an application may sit idle as long as it likes
            return True
        if kind != wire.REQUEST:  # SMS records: opened and sealed in order, so never passed on
            connection.send(handler.handle(kind, body))
            return True
        _reading.connection = connection
        me = threading.get_ident()
        self.running.add(me)
        try:
            reply = handler.handle(kind, body)
        finally:
            self.running.discard(me)
            passed = _reading.connection is None
            _reading.connection = None
            if passed:
                self.long_slots.release()
        connection.send(reply)
        if not passed:
            return True
        with connection.finished:
            connection.long -= 1
            connection.finished.notify_all()
        return False

    def pass_reading_on(self):
        """ptkhsm.gate's hook in a worker: the request this thread runs is about to be long,
        so another thread takes up its connection's reading. At LONG_REQUESTS of them at
        once, it stays (and holds up its connection's next requests)."""
        connection = getattr(_reading, "connection", None)
        if connection is None or not self.long_slots.acquire(blocking=False):
            return
        _reading.connection = None
        self.running.discard(threading.get_ident())   # long: it leaves the GIL to others
        with connection.finished:
            connection.long += 1
        self.threads.run(functools.partial(self.read, connection))

    def end(self, connection, reason):
        """The connection is over: its application ends once its long requests are done."""
        with connection.finished:
            connection.finished.wait_for(lambda: not connection.long)
        try:
            connection.sock.close()
        except OSError:
            pass
        connection.handler.close()
        with self.lock:
            self.connections.discard(connection)
            self.lock.notify_all()
        logger.info("connection from %s ended: %s", connection.peer, reason)

    def stop_connections(self):
        """Shut every connection down and wait (STOP_TIMEOUT at most) until each has ended."""
        with self.lock:
            connections = list(self.connections)
        for connection in connections:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self.lock:
            self.lock.wait_for(lambda: not self.connections, STOP_TIMEOUT)


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
