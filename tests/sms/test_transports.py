"""SMS records on both transports, seen from a tap: in process (ptkhsm.transport.local's
TAP) and over TCP (a forwarding proxy on 127.0.0.1 capturing the loopback bytes between
the client library and a real `ptkhsm serve`)."""

import contextlib
import gc
import hmac
import struct
import sys
import threading

import pytest

from ptkhsm import constants as C
from ptkhsm import wire
from ptkhsm.errors import CKRError
from ptkhsm.mechparams import Mechanism
from ptkhsm.sms import channel as ch
from ptkhsm.transport import collector
from netserver import Server

from smsutil import NEEDLE, RW, SECRET, USER, Proxy, Tap, client, env_for, set_flags, workload

SMS_FLAGS = C.CKF_NO_CLEAR_PINS | C.CKF_AUTH_PROTECTION | C.CKF_FULL_SMS_ENC | C.CKF_FULL_SMS_SIGN


@contextlib.contextmanager
def hsm(tmp_path, transport, flags, change=None, firmware=None, **items):
    """-> (api, tap): a client of an HSM with these flags over one transport, and what crossed."""
    env = env_for(tmp_path / "hsm")
    set_flags(env, flags, firmware)
    if transport == "inprocess":
        with Tap(change) as tap:
            ck = client(env, **items)
            try:
                yield ck.api, tap
            finally:
                ck.finalize()
        return
    with Server(env["ET_PTKC_SW_DATAPATH"], "tcp", env=env) as server:
        proxy = Proxy(server.address, change)
        ck = client(env, proxy.address, **items)
        try:
            yield ck.api, proxy
        finally:
            with contextlib.suppress(CKRError):
                ck.finalize()
            proxy.close()


def records(tap, direction):
    """The SMS records of one direction -> [(kind, protection, epoch, sequence, header, body)]."""
    out = []
    for d, frame in tap.frames:
        if d == direction and frame[4] == wire.SMS:
            out.append(ch.unframe(frame[5:]))
    return out


def rv(fn, *args):
    with pytest.raises(CKRError) as info:
        fn(*args)
    return info.value.rv


TRANSPORTS = ["inprocess", "tcp"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_without_flags_the_tap_sees_the_pin(tmp_path, transport):
    """The same run with every flag clear shows the PIN and the key value (the tap works).
    In process that is a run with an SMPR letter that needs no encryption (R), as the
    fast path without any flag crosses no bytes at all."""
    items = {"ET_PTKC_PTK0000001_SMPR": "R"} if transport == "inprocess" else {}
    with hsm(tmp_path, transport, 0, **items) as (api, tap):
        workload(api)
    assert USER in tap.bytes("request") and SECRET in tap.bytes("request")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("how", ["flag", "smpr"])
def test_no_clear_pins_hides_pins_and_secret_values(tmp_path, transport, how):
    flags, items = (C.CKF_NO_CLEAR_PINS, {}) if how == "flag" else (0, {"ET_PTKC_PTK0000001_SMPR": "E"})
    with hsm(tmp_path, transport, flags, **items) as (api, tap):
        workload(api)
    sent = tap.bytes("request")
    assert USER not in sent and SECRET not in sent
    assert any(r[1] & ch.ENCRYPTED for r in records(tap, "request"))


def test_auth_protection_every_session_request_has_a_valid_mac(tmp_path):
    """In process, with the client's own MAC key: every session request is a signed record
    whose MAC verifies, in sequence; calls without a session cross plain."""
    with hsm(tmp_path, "inprocess", C.CKF_AUTH_PROTECTION) as (api, tap):
        workload(api)
        channel = api.channel.link.channel.channel
        suite, master, transcript = channel.suite, channel.out.master, channel.out.transcript
    _, mac_key = suite.keys(master, transcript, 0, b"request")
    data = [r for r in records(tap, "request") if r[0] == ch.DATA]
    assert len(data) >= 5
    for expected, (kind, protection, epoch, sequence, header, body) in enumerate(data, 1):
        assert protection & ch.SIGNED and sequence == expected and epoch == 0
        mac = hmac.digest(mac_key, header + body[:-suite.tag_len], "sha512")[:suite.tag_len]   # HMAC-SHA-512/256
        assert hmac.compare_digest(body[-suite.tag_len:], mac)
    plain = [f for d, f in tap.frames if d == "request" and f[4] == wire.REQUEST]
    assert plain and all(not wire.BY_ID[struct.unpack(">H", f[9:11])[0]].session for f in plain)


def test_auth_protection_over_tcp_signs_and_checks_every_request(tmp_path):
    with hsm(tmp_path, "tcp", C.CKF_AUTH_PROTECTION) as (api, proxy):
        workload(api)
    data = [r for r in records(proxy, "request") if r[0] == ch.DATA]
    assert len(data) >= 5 and all(r[1] & ch.SIGNED for r in data)


def _flip_request(index_wanted):
    state = {"n": 0}

    def change(direction, frame, index):
        if direction == "request" and frame[4] == wire.SMS and ch.unframe(frame[5:])[0] == ch.DATA:
            state["n"] += 1
            if state["n"] == index_wanted:
                return [frame[:-1] + bytes([frame[-1] ^ 1])]
        return [frame]
    return change


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_tampered_request_fails_closed_and_other_channels_carry_on(tmp_path, transport):
    change = _flip_request(3)
    if transport == "inprocess":
        change_tap = lambda d, f, i: change(d, f, i)[0]  # noqa: E731
    with hsm(tmp_path, transport, C.CKF_AUTH_PROTECTION,
             change=change_tap if transport == "inprocess" else change) as (api, tap):
        s = api.open_session(0, C.CKF_SERIAL_SESSION)
        api.login(s, C.CKU_USER, USER)                   # record 1
        api.session_info(s)                              # record 2
        assert rv(api.session_info, s) == C.CKR_BAD_REQ_SIGNATURE   # record 3, one bit flipped
        assert rv(api.session_info, s) == C.CKR_BAD_REQ_SIGNATURE   # the channel has ended
        if transport == "tcp":
            other = client(env_for(tmp_path / "hsm"), tap.target[0] + ":%d" % tap.target[1])
            s2 = other.api.open_session(0, C.CKF_SERIAL_SESSION)
            other.api.login(s2, C.CKU_USER, USER)
            assert other.api.session_info(s2)[0] == 0
            other.finalize()


@pytest.mark.parametrize("attack", ["replay", "reorder", "drop"])
def test_replayed_reordered_or_dropped_requests_fail_closed_over_tcp(tmp_path, attack):
    held = []

    def change(direction, frame, index):
        if direction == "request" and frame[4] == wire.SMS and ch.unframe(frame[5:])[0] == ch.DATA:
            held.append(frame)
            n = len(held)
            if attack == "replay" and n == 3:
                return [held[1]]              # the second record again instead of the third
            if attack == "drop" and n == 2:
                return []                     # never arrives: the next one is out of order
            if attack == "reorder" and n == 2:
                return []                     # held back...
            if attack == "reorder" and n == 3:
                return [frame, held[1]]       # ...and sent after the next one
        return [frame]
    with hsm(tmp_path, "tcp", C.CKF_AUTH_PROTECTION, change=change,
             ET_HSM_NETCLIENT_REPLY_TIMEOUT=3) as (api, proxy):
        s = api.open_session(0, C.CKF_SERIAL_SESSION)
        api.login(s, C.CKU_USER, USER)
        codes = set()

        def call():
            try:
                api.session_info(s)
            except CKRError as exc:
                codes.add(exc.rv)
        if attack == "replay":
            for _ in range(3):
                call()
        else:   # two calls in flight at once (two threads), so records 2 and 3 are both sent
            threads = [threading.Thread(target=call) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert C.CKR_SMS_ERROR in codes, codes


def test_a_tampered_reply_is_refused_with_auth_replies(tmp_path):
    """SMPR R: every reply is signed; one changed bit ends the channel on the client."""
    def change(direction, frame, index):
        if direction == "reply" and frame[4] == wire.SMS and ch.unframe(frame[5:])[0] == ch.DATA:
            return frame[:-1] + bytes([frame[-1] ^ 0x80])
        return frame
    with hsm(tmp_path, "inprocess", 0, ET_PTKC_PTK0000001_SMPR="R") as (api, tap):
        s = api.open_session(0, C.CKF_SERIAL_SESSION)
        api.login(s, C.CKU_USER, USER)
        assert all(r[1] & ch.SIGNED for r in records(tap, "reply") if r[0] == ch.DATA)
        tap.change = change
        assert rv(api.session_info, s) == C.CKR_BAD_REPLY_SIGNATURE


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_full_encryption_leaves_no_plaintext_attribute(tmp_path, transport):
    with hsm(tmp_path, transport, C.CKF_FULL_SMS_ENC | C.CKF_FULL_SMS_SIGN) as (api, tap):
        workload(api)
    everything = tap.bytes()
    assert NEEDLE not in everything and SECRET not in everything and USER not in everything
    data = records(tap, "request") + records(tap, "reply")
    assert all(r[1] == ch.ENCRYPTED | ch.SIGNED for r in data if r[0] == ch.DATA)


def _run_collecting_eagerly(thread, callback, seconds):
    """Run `thread` (up to `seconds`) with a collection at almost every allocation and
    `callback` told of each."""
    threshold = gc.get_threshold()
    gc.callbacks.append(callback)
    gc.set_threshold(1)
    try:
        thread.start()
        thread.join(seconds)
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(callback)


@pytest.mark.parametrize("pending", ["made during the exchange", "pending before the call"])
def test_a_finaliser_that_calls_back_never_runs_while_its_thread_holds_the_channel(tmp_path, pending):
    """A garbage collection may finalise a host's object that calls the module again on the
    same thread (python-pkcs11 ends an abandoned operation so). No collection starts while a
    thread holds the channel, so that call neither waits forever for the channel its own
    thread holds nor overtakes the record in flight, whether the garbage was made during
    the exchange or was already waiting for the next collection; both calls succeed."""
    env = env_for(tmp_path / "hsm")
    set_flags(env, SMS_FLAGS)
    got, armed, inside = [], [], []

    class Abandoned:
        def __del__(self):
            got.append(ck.api.generate_random(session, 8))

    def abandon():
        garbage = Abandoned()
        garbage.cycle = garbage   # only a collection frees it: one may start any time now

    def change(direction, frame, index):
        if armed and direction == "request":
            armed.clear()
            abandon()
        return frame

    def started(phase, info):
        try:
            # a collection starting on a thread that holds the channel (its re-entrant lock)
            if phase == "start" and channel._lock._is_owned():
                inside.append(info["generation"])
        except Exception as exc:   # raised in a gc callback, it would only be a warning
            inside.append(exc)

    with Tap(change):
        ck = client(env)
        channel = ck.api.channel
        session = ck.api.open_session(0, RW)
        caller = threading.Thread(target=lambda: got.append(ck.api.generate_random(session, 16)), daemon=True)
        gc.collect()
        if pending == "pending before the call":
            abandon()
        else:
            armed.append(True)
        _run_collecting_eagerly(caller, started, 30)
        assert not caller.is_alive(), "the finaliser's call waits for the channel its own thread holds"
        assert not inside, "collections started while the calling thread held its channel"
        gc.collect()
        assert sorted(len(x) for x in got) == [8, 16]
        ck.finalize()


def test_over_the_network_no_collection_starts_inside_a_records_sealing_or_opening(tmp_path):
    """The same over TCP: garbage whose finaliser calls the module is made at every point
    where SMS code returns from a C call, and the collector runs at almost every allocation.
    No collection starts on the calling thread while it holds a direction's lock (the
    finaliser's call would wait for it forever; it did before the hold-off), and every
    call, the finalisers' too, gets its answer."""
    from ptkhsm.sms import channel as sms_channel
    from ptkhsm.transport import smslink
    env = env_for(tmp_path / "hsm")
    set_flags(env, SMS_FLAGS)
    code = {sms_channel.__file__, smslink.__file__}
    got, inside, made = [], [], []

    class Abandoned:
        def __del__(self):
            got.append(ck.api.generate_random(session, 8))

    def abandon(frame, event, arg):
        if event == "c_return" and frame.f_code.co_filename in code and len(made) < 200:
            garbage = Abandoned()
            garbage.cycle = garbage
            made.append(1)

    def started(phase, info):
        try:
            if phase == "start" and threading.current_thread() is caller and (
                    directions.out.lock.locked() or directions.inc.lock.locked()):
                inside.append(info["generation"])
        except Exception as exc:   # raised in a gc callback, it would only be a warning
            inside.append(exc)

    def calls():
        sys.setprofile(abandon)
        try:
            for _ in range(10):
                got.append(ck.api.generate_random(session, 16))
        finally:
            sys.setprofile(None)

    with Server(env["ET_PTKC_SW_DATAPATH"], "tcp", env=env) as server:
        ck = client(env, server.address, ET_HSM_NETCLIENT_REPLY_TIMEOUT=5)
        session = ck.api.open_session(0, RW)
        directions = ck.api.sms_link.channel.channel
        caller = threading.Thread(target=calls, daemon=True)
        gc.collect()
        _run_collecting_eagerly(caller, started, 60)
        assert not caller.is_alive(), "a finaliser's call waits for the direction lock its own thread holds"
        assert not inside, "collections started while the calling thread was sealing or opening a record"
        gc.collect()
        assert made and sorted(len(x) for x in got) == [8] * len(made) + [16] * 10
        ck.finalize()


def test_overlapping_calls_hold_the_collector_until_the_last_ends():
    """The collector is the process's: two channels' calls overlapping on two threads keep it
    off until both are over, and it comes back on only if it was on."""
    was = gc.isenabled()
    try:
        for start in (True, False):
            (gc.enable if start else gc.disable)()
            collector.hold()
            collector.hold()
            collector.release()
            assert not gc.isenabled(), "the first call out turned the collector on"
            collector.release()
            assert gc.isenabled() is start
    finally:
        collector._holders = 0
        (gc.enable if was else gc.disable)()


def test_overlapping_calls_do_not_starve_the_collector(tmp_path):
    """Two applications calling at once on two threads, each call leaving a reference cycle:
    the young generation is still collected as its threshold says, not only when both
    happen to be outside a call at the same moment."""
    env = env_for(tmp_path / "hsm")
    set_flags(env, SMS_FLAGS)
    apps = [client(env) for _ in range(2)]
    sessions = [ck.api.open_session(0, RW) for ck in apps]
    collections = []

    def started(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    def work(i):
        for _ in range(1500):
            apps[i].api.generate_random(sessions[i], 16)
            cycle = []
            cycle.append(cycle)

    threshold = gc.get_threshold()
    gc.collect()
    gc.set_threshold(100, 10, 10)
    gc.callbacks.append(started)
    try:
        workers = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
    finally:
        gc.callbacks.remove(started)
        gc.set_threshold(*threshold)
    assert len(collections) >= 10, f"{len(collections)} collections for 3,000 calls and cycles"
    for ck in apps:
        ck.finalize()


def test_unprotected_session_calls_are_refused(tmp_path):
    """A client that ignores the HSM's flags (no SMS settings) gets CKR_BAD_PROTECTION for
    every call with a session; calls without one still work."""
    from ptkhsm.transport.channel import Channel
    env = env_for(tmp_path / "hsm")
    set_flags(env, C.CKF_AUTH_PROTECTION)
    with Server(env["ET_PTKC_SW_DATAPATH"], "tcp", env=env) as server:
        host, port = server.address.rsplit(":", 1)
        raw = Channel(("tcp", host, int(port)), 5, 5)       # no SMS: plain frames only
        assert raw.info["security_mode"] == C.CKF_AUTH_PROTECTION
        session = raw.call(wire.BY_NAME["open_session"], (0, C.CKF_SERIAL_SESSION))
        assert rv(raw.call, wire.BY_NAME["login"], (session, C.CKU_USER, USER)) == C.CKR_BAD_PROTECTION
        raw.close()


def test_downgrade_to_legacy_adh_fails_closed(tmp_path):
    """The client asks ADH2; an attacker rewrites its HELLO to offer ADH to an HSM old enough to
    speak it. The ACCEPT names ADH: the client refuses (and the signature would not verify)."""
    def change(direction, frame, index):
        if direction == "request" and frame[4] == wire.SMS and ch.unframe(frame[5:])[0] == ch.HELLO:
            attacker = ch.ClientHandshake(ch.ADH)
            return [wire.frame(wire.SMS, attacker.hello())]
        return [frame]
    with pytest.raises(CKRError) as info:
        with hsm(tmp_path, "tcp", C.CKF_AUTH_PROTECTION, change=change, firmware=(5, 0, 0)):
            pass
    assert info.value.rv == C.CKR_CANNOT_DERIVE_KEYS and "mode" in str(info.value)


def test_legacy_adh_needs_old_firmware(tmp_path):
    with pytest.raises(CKRError) as info:
        with hsm(tmp_path / "new", "inprocess", C.CKF_AUTH_PROTECTION, ET_PTKC_SMS_MODE="ADH"):
            pass
    assert info.value.rv == C.CKR_CANNOT_DERIVE_KEYS and "5.01.00" in str(info.value)
    with hsm(tmp_path / "old", "inprocess", C.CKF_NO_CLEAR_PINS, firmware=(5, 0, 0),
             ET_PTKC_SMS_MODE="ADH") as (api, tap):
        workload(api)
        assert api.channel.link.channel.channel.suite.mode == ch.ADH
    assert USER not in tap.bytes("request")


def _fingerprint(env):
    from ptkhsm.config import Config
    from ptkhsm.hsm.core import HSM
    return ch.fingerprint(ch.spki(HSM(Config(env)).identity))


def test_a_man_in_the_middle_fails_against_a_pinned_hsm(tmp_path):
    """In process, an attacker answers the client's HELLO with its own ACCEPT (a valid
    handshake under its own identity key). With the HSM's fingerprint pinned the client
    fails closed naming both identities; the HSM serves the next channel."""
    env = env_for(tmp_path / "hsm")
    set_flags(env, C.CKF_NO_CLEAR_PINS)
    real = _fingerprint(env)
    attacker = ch.ServerHandshake(ch.new_identity(), "PTK0000001", (5, 10, 0), C.CKF_NO_CLEAR_PINS)
    hello = {}

    def change(direction, frame, index):
        if frame[4] == wire.SMS and direction == "request" and ch.unframe(frame[5:])[0] == ch.HELLO:
            hello["record"] = frame[5:]
        if frame[4] == wire.SMS and direction == "reply" and ch.unframe(frame[5:])[0] == ch.ACCEPT:
            return wire.frame(wire.SMS, attacker.accept(hello["record"]))
        return frame
    with Tap(change):
        with pytest.raises(CKRError) as info:
            client(env, ET_PTKC_PTK0000001_SMS_IDENTITY=real)
    assert info.value.rv == C.CKR_CANNOT_DERIVE_KEYS
    assert real in str(info.value) and "pinned" in str(info.value)
    with Tap() as tap:
        ck = client(env, ET_PTKC_PTK0000001_SMS_IDENTITY=real)
        workload(ck.api)
        assert ck.api.channel.link.hsm["fingerprint"] == real
        ck.finalize()
    assert USER not in tap.bytes()


def test_a_swapped_server_fails_closed_when_pinned(tmp_path):
    """Over TCP: a second `ptkhsm serve` of the same serial but another identity, where the
    pinned one was expected: CKR_CANNOT_DERIVE_KEYS, also without any SMS flag (a pin
    always makes a channel); the real one, pinned, works."""
    real_env, fake_env = env_for(tmp_path / "real"), env_for(tmp_path / "fake")
    set_flags(real_env, 0)
    set_flags(fake_env, 0)
    real = _fingerprint(real_env)
    with Server(fake_env["ET_PTKC_SW_DATAPATH"], "tcp", env=fake_env) as fake, \
            Server(real_env["ET_PTKC_SW_DATAPATH"], "tcp", env=real_env) as genuine:
        with pytest.raises(CKRError) as info:
            client(real_env, fake.address, ET_PTKC_PTK0000001_SMS_IDENTITY=real)
        assert info.value.rv == C.CKR_CANNOT_DERIVE_KEYS and "pinned" in str(info.value)
        ck = client(real_env, genuine.address, ET_PTKC_PTK0000001_SMS_IDENTITY=real)
        workload(ck.api)
        ck.finalize()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rollover_by_blocks_keeps_a_long_multipart_operation_correct(tmp_path, transport):
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from ptkhsm.mechparams import Mechanism
    iv = bytes(16)
    chunks = [bytes([i]) * 4096 for i in range(48)]   # 48 x 256 blocks each way
    with hsm(tmp_path, transport, C.CKF_FULL_SMS_ENC | C.CKF_FULL_SMS_SIGN, ET_PTKC_SMS_BLOCKS=10000) as (api, _):
        s, key, _ = workload(api)
        api.encrypt_init(s, Mechanism(C.CKM_AES_CBC, iv), key)
        out = b"".join(api.encrypt_update(s, chunk, len(chunk)) for chunk in chunks)
        out += api.encrypt_final(s, 16)
        link = api._channel.link if transport == "tcp" else api.channel.link
        counters = link.counters
    reference = Cipher(algorithms.AES(SECRET), modes.CBC(iv)).encryptor()
    assert out == reference.update(b"".join(chunks)) + reference.finalize()
    assert counters["rollovers"] >= 2 and counters["epoch"] == counters["rollovers"], counters


def test_rollover_by_hours_with_a_clock_the_test_moves(tmp_path):
    from ptkhsm.config import Config
    from ptkhsm.hsm.core import HSM
    from ptkhsm.transport.local import LocalApi, LocalChannel
    from ptkhsm.transport.smslink import ClientSettings
    env = env_for(tmp_path / "hsm", ET_PTKC_SMS_HOURS=4)
    set_flags(env, C.CKF_AUTH_PROTECTION)
    now = [1000.0]
    api = LocalApi(LocalChannel(HSM(Config(env)), ClientSettings(Config(env), clock=lambda: now[0])))
    with Tap() as tap:
        s = api.open_session(0, RW)
        api.login(s, C.CKU_USER, USER)
        api.digest_init(s, Mechanism(C.CKM_SHA256, None))
        api.digest_update(s, b"a" * 100)
        now[0] += 3 * 3600
        api.digest_update(s, b"b" * 100)
        assert api.channel.link.counters["rollovers"] == 0
        now[0] += 3600                                   # 4 hours since the channel was made
        api.digest_update(s, b"c" * 100)
        assert api.channel.link.counters["rollovers"] == 1
        digest = api.digest_final(s, 32)
    import hashlib
    assert digest == hashlib.sha256(b"a" * 100 + b"b" * 100 + b"c" * 100).digest()
    epochs = [r[2] for r in records(tap, "request") if r[0] == ch.DATA]
    assert epochs == [0, 0, 0, 0, 1, 1]   # login, init, a, b; then c and final in the next epoch
    api.finalize()


def test_unix_socket_carries_the_channel_too(tmp_path):
    """The unix-socket transport is the same channel code: with all four flags the workload
    runs sealed (the client's link exists, its records count cipher blocks)."""
    env = env_for(tmp_path / "hsm")
    set_flags(env, SMS_FLAGS)
    with Server(env["ET_PTKC_SW_DATAPATH"], "unix", env=env) as server:
        ck = client(env, server.address)
        workload(ck.api)
        assert ck.api.sms_link is not None and ck.api.sms_link.counters["blocks"] > 0
        ck.finalize()


def test_a_call_nested_in_the_hsms_handling_in_process(tmp_path):
    """A call nested in the HSM's handling of this thread's call (a signal handler's; the
    garbage collector's finalizers wait until a call is done) runs whole, in process under
    all four flags: both calls get their answers, no wait on the thread's own lock, and the
    outer call's reply is still held to the protection its request asked for."""
    env = env_for(tmp_path / "hsm")
    set_flags(env, SMS_FLAGS)
    ck = client(env)
    api = ck.api
    s = api.open_session(0, RW)
    app = api.channel.handler.app   # the HSM's side of this application
    nested, expected = [], {}

    def random_with_a_nested_call(handle, length, _real=app.generate_random):
        nested.append(api.session_info(s))   # on the same thread
        expected.update(api.channel.link._expect)   # what the outer call's reply must carry
        return _real(handle, length)

    app.generate_random = random_with_a_nested_call
    out = []
    worker = threading.Thread(target=lambda: out.append(api.generate_random(s, 16)), daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():   # (the application stays behind: its lock is the stuck thread's)
        pytest.fail("the nested call waited on its own thread's lock")
    assert len(out[0]) == 16 and nested and nested[0][0] == 0
    assert expected, "the nested call's reply took the outer call's expected protection"
    del app.generate_random
    assert len(api.generate_random(s, 8)) == 8   # the channel carries on, records in order
    ck.finalize()
