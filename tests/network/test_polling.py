"""Polling for a reply, or for the next request, is bounded (docs/network.md, "Polling"):
a call that waits long, and a connection that sits idle, sleep in recv after the poll
time instead of spinning. Each test measures CPU time against a wait it makes long
(hundreds of milliseconds): a poll that never gave up would use about all of it."""

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from ptkhsm import constants as C
from ptkhsm import wire
from ptkhsm.config import Config
from ptkhsm.cryptoki.netclient import NetClient
from ptkhsm.transport import polling
from ptkhsm.transport.frames import FrameReader

from netserver import TRANSPORTS, Server

SO, USER = b"12345678", b"1234"
RW = C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION
SLOW_KDF = "1000000"  # PBKDF2 iterations: a login takes a few hundred milliseconds on the server


def test_frame_reader_polls_then_sleeps_and_sees_the_end():
    mine, peer = socket.socketpair()
    frame = wire.request(5, "generate_random", (1, 32))
    reader = FrameReader(mine, poll=0.001, may_poll=lambda: True)

    def send_late():
        time.sleep(0.3)
        peer.sendall(frame[:3])   # half a header: the reader must wait for the rest too
        time.sleep(0.1)
        peer.sendall(frame[3:] + frame)

    sender = threading.Thread(target=send_late)
    sender.start()
    wall, cpu = time.monotonic(), time.thread_time()
    first = reader.read(poll=True)
    wall, cpu = time.monotonic() - wall, time.thread_time() - cpu
    sender.join()
    assert first == (frame[4], frame[5:]) and reader.read(poll=True) == first
    assert wall >= 0.3 and cpu < wall / 4, f"{cpu:.3f} s of CPU in a {wall:.3f} s wait"
    peer.close()
    with pytest.raises(EOFError):
        reader.read(poll=True)
    mine.close()


def _worker_cpu(server_pid):
    """CPU seconds (user + system) of the server's one worker so far."""
    with open(f"/proc/{server_pid}/task/{server_pid}/children") as f:
        (worker,) = f.read().split()
    with open(f"/proc/{worker}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("poll", ["100", "0"], ids=["polling", "no-polling"])
def test_a_slow_reply_and_an_idle_connection_cost_little_cpu(tmp_path, transport, poll):
    server = Server(tmp_path / "data", transport, workers=1,
                    env=dict(os.environ, ET_PTKC_SW_PIN_KDF_ITERATIONS=SLOW_KDF, ET_HSM_NETSERVER_POLL_US=poll))
    config = Config({"ET_HSM_NETCLIENT_SERVERLIST": server.address, "HOME": "/nonexistent",
                     "ET_HSM_NETCLIENT_POLL_US": poll})
    client = NetClient(config, config.get("ET_HSM_NETCLIENT_SERVERLIST"))
    try:
        client.init_token(1, SO, b"polling".ljust(32))
        session = client.open_session(1, RW)
        client.login(session, C.CKU_SO, SO)
        client.init_pin(session, USER)
        client.logout(session)
        wall, cpu = time.monotonic(), time.thread_time()
        client.login(session, C.CKU_USER, USER)   # the server runs PBKDF2: the client waits
        wall, cpu = time.monotonic() - wall, time.thread_time() - cpu
        assert cpu < wall / 4, f"the client used {cpu:.3f} s of CPU waiting {wall:.3f} s for its reply"
        assert len(client.generate_random(session, 32)) == 32
        before = _worker_cpu(server.pid)
        time.sleep(1.0)   # the connection stays open, with nothing to say
        idle = _worker_cpu(server.pid) - before
        assert idle < 0.25, f"an idle connection's worker used {idle:.2f} s of CPU in 1 s"
        assert len(client.generate_random(session, 32)) == 32
    finally:
        client.finalize()
        server.stop()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="polling is off on one CPU")
def test_polling_backs_off_when_its_cpu_is_wanted(monkeypatch):
    """A yield that gives the CPU away (another process runs on it) turns polling off for a
    while: a looking thread would take that CPU from the process, or from the peer it waits for."""
    monkeypatch.setattr(polling, "BACKOFF", 0.2)
    cpu = min(os.sched_getaffinity(0))
    mask = os.sched_getaffinity(0)
    poll = polling.Poll(0.01)   # made while this process may run on every CPU (one CPU: no polling)
    hog = subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(0, {cpu})
        time.sleep(0.1)   # the hog is running on that CPU
        for _ in range(50):
            deadline = poll.deadline()
            assert deadline is not None
            if not poll.again(deadline):
                break
        else:
            pytest.fail("50 yields on a CPU another process keeps busy all came back at once")
        assert poll.deadline() is None, "polling went on after a yield that gave the CPU away"
    finally:
        os.sched_setaffinity(0, mask)
        hog.kill()
        hog.wait()
    time.sleep(0.25)
    assert poll.deadline() is not None, "polling stayed off past its back-off"


def test_a_process_on_one_cpu_never_polls():
    mask = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(mask)})
        assert polling.Poll(0.01).deadline() is None
    finally:
        os.sched_setaffinity(0, mask)
