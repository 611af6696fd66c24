"""A call nested in another on the same thread, through a real server.

The host's garbage collector runs finalizers on whatever thread allocates, in
the middle of that thread's call: python-pkcs11 ends an abandoned operation
or closes a session from `__del__`. The collector (and a signal handler) can
start where the interpreter checks for pending work: when a Python function
is entered and when a call to a C function returns. A profile function
(sys.setprofile) stops at exactly those points in the proxy's and the
channel's code and makes a nested call there: the outer call and the nested
one must both get their own answers, with no frame mixed up and no wait on
the thread's own locks (a reply time-out of 5 s turns a deadlock into a
failure)."""

import gc
import hashlib
import inspect
import itertools
import sys
import threading

import pytest

from ptkhsm import constants as C
from ptkhsm.config import Config
from ptkhsm.cryptoki import netclient
from ptkhsm.cryptoki.netclient import NetClient
from ptkhsm.errors import CKRError
from ptkhsm.mechparams import Mechanism
from ptkhsm.transport import channel

from netserver import TRANSPORTS, Server

SO = b"12345678"
RW = C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION
PARTS = [bytes([i]) * 100 for i in range(4)]
CODE = {channel.__file__, netclient.__file__}


class Nester:
    """A profile function making `nested()` at every `every`-th point of the proxy's code."""

    def __init__(self, nested, every=1):
        self.nested, self.every = nested, every
        self.points = itertools.count()
        self.results = []

    def __call__(self, frame, event, arg):
        # 'call': a Python function entered (its caller or itself ours); 'c_return': a C function
        # returned to our code. Calls made in here are not profiled: one level of nesting.
        if event == "call":
            if frame.f_code.co_filename not in CODE and (frame.f_back is None or
                                                         frame.f_back.f_code.co_filename not in CODE):
                return
        elif event != "c_return" or frame.f_code.co_filename not in CODE:
            return
        if next(self.points) % self.every == 0:
            self.results.append(self.nested())

    def __enter__(self):
        sys.setprofile(self)
        return self

    def __exit__(self, *exc):
        sys.setprofile(None)


@pytest.fixture(params=TRANSPORTS)
def api(request, tmp_path):
    server = Server(tmp_path / "data", request.param, workers=1)
    config = Config({"ET_HSM_NETCLIENT_SERVERLIST": server.address, "HOME": "/nonexistent",
                     "ET_HSM_NETCLIENT_REPLY_TIMEOUT": "5"})
    client = NetClient(config, config.get("ET_HSM_NETCLIENT_SERVERLIST"))
    client.init_token(0, SO, b"reentrant".ljust(32))
    yield client
    client.finalize()
    server.stop()


def digest_in_parts(api, session):
    api.digest_init(session, Mechanism(C.CKM_SHA256))
    for part in PARTS:
        api.digest_update(session, part)
    return api.digest_final(session, 32)


def test_nested_calls_at_every_point_of_a_call(api):
    outer, other = api.open_session(0, RW), api.open_session(0, RW)
    with Nester(lambda: api.session_info(other)[1]) as nester:
        assert digest_in_parts(api, outer) == hashlib.sha256(b"".join(PARTS)).digest()
        assert api.digest_init(outer, Mechanism(C.CKM_SHA256)) is None
        assert api.digest(outer, b"abc", 32) == hashlib.sha256(b"abc").digest()
        found = api.open_session(0, RW)
        api.find_init(found, [(C.CKA_CLASS, C.CKO_DATA)])
        assert api.find(found, 10) == []
        api.find_final(found)
        api.close_session(found)
    assert len(nester.results) > 100 and set(nester.results) == {C.CKS_RW_PUBLIC_SESSION}


def test_nested_operations_and_closes(api):
    """What python-pkcs11's finalizers do: finish another session's operation, close it."""
    outer = api.open_session(0, RW)
    abandoned = [api.open_session(0, RW) for _ in range(12)]
    for session in abandoned:
        api.digest_init(session, Mechanism(C.CKM_SHA256))
        api.digest_update(session, b"abandoned")
    todo = list(abandoned)

    def finalizer():
        if not todo:
            return None
        session = todo.pop()
        digest = api.digest_final(session, 32)
        api.close_session(session)
        return digest

    with Nester(finalizer) as nester:
        assert digest_in_parts(api, outer) == hashlib.sha256(b"".join(PARTS)).digest()
    assert not todo and nester.results.count(hashlib.sha256(b"abandoned").digest()) == 12
    for session in abandoned:
        with pytest.raises(CKRError) as info:
            api.session_info(session)
        assert info.value.rv == C.CKR_SESSION_HANDLE_INVALID


class Abandoned:
    """An object in a reference cycle whose finalizer makes a call, as python-pkcs11's do."""

    def __init__(self, api, session):
        self.api, self.session, self.cycle = api, session, self
        self.closed = []

    def __del__(self):
        self.api.close_session(self.session)
        self.closed.append(self.session)


def test_a_finalizer_run_by_the_collector_mid_call(api):
    outer, victim = api.open_session(0, RW), api.open_session(0, RW)
    closed = Abandoned(api, victim).closed   # only the cycle keeps it alive now
    collected = []

    def collect():
        if not collected:
            collected.append(gc.collect())

    with Nester(collect):
        assert api.session_info(outer)[1] == C.CKS_RW_PUBLIC_SESSION
    assert closed == [victim]
    with pytest.raises(CKRError) as info:
        api.session_info(victim)
    assert info.value.rv == C.CKR_SESSION_HANDLE_INVALID


def test_nested_calls_while_other_threads_read(api):
    """Several threads, each sometimes the reader: a nested call on a waiting thread is
    answered by whichever thread reads, a nested call on the reader reads itself."""
    sessions = [api.open_session(0, RW) for _ in range(4)]
    spare = api.open_session(0, RW)
    nester = Nester(lambda: api.session_info(spare)[1], every=7)
    failures = []

    def work(session):
        try:
            with nester:   # the profile function is the thread's own
                for _ in range(10):
                    assert digest_in_parts(api, session) == hashlib.sha256(b"".join(PARTS)).digest()
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert not failures, failures
    assert len(nester.results) > 50 and set(nester.results) == {C.CKS_RW_PUBLIC_SESSION}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_python_pkcs11_finalizers_run_by_the_collector_mid_call(tmp_path, transport):
    """The real thing: python-pkcs11's own finalizers, run by the collector inside the
    library's calls (gc_app.py; a few of its 25 collections land there)."""
    import subprocess
    from pathlib import Path

    from conftest import MODULE, USER_PIN, init_token
    with Server(tmp_path / "data", transport) as server:
        env = server.env(PKCS11_MODULE=MODULE, PKCS11_TOKEN_LABEL="gc", PKCS11_TOKEN_PIN=USER_PIN,
                         ET_PTKC_EXTTOKEN_ENABLE="0", ET_HSM_NETCLIENT_REPLY_TIMEOUT="10")
        init_token(env, label="gc")
        run = subprocess.run([sys.executable, str(Path(__file__).with_name("gc_app.py"))], env=env,
                             capture_output=True, text=True, timeout=300)
        words = run.stdout.split()
        assert run.returncode == 0 and words[:2] == ["ok", "25"], run.stdout + run.stderr
        assert int(words[3]) > 0, run.stdout  # some finalizers did run nested in the library's calls


def test_a_nested_call_that_takes_the_frame_just_measured(api):
    """The nested call starts where `len(buf)` has just said the outer call's reply is
    whole in the buffer, and takes it (the reader hands it on): the outer call must look
    again, not index the emptied buffer (an IndexError once, in a fresh-clone make test)."""
    lines, first = inspect.getsourcelines(channel.Channel._read_frame)
    (measured,) = [first + i for i, line in enumerate(lines) if "if len(buf) >= size:" in line]
    outer, other = api.open_session(0, RW), api.open_session(0, RW)
    nested = []

    def profile(frame, event, arg):
        if event == "c_return" and arg is len and frame.f_code is channel.Channel._read_frame.__code__ \
                and frame.f_lineno == measured and not nested:
            nested.append(api.session_info(other)[1])

    for _ in range(20):
        nested.clear()
        sys.setprofile(profile)
        try:
            state = api.session_info(outer)[1]
        finally:
            sys.setprofile(None)
        assert state == C.CKS_RW_PUBLIC_SESSION and nested == [C.CKS_RW_PUBLIC_SESSION]
