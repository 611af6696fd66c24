"""The wire codec alone, and a server fed broken frames: only the sender's
connection closes, other clients carry on, stored data stays intact."""

import os
import random
import socket
import struct

import pytest

from ptkhsm import calls, wire
from ptkhsm import constants as C
from ptkhsm.config import Config
from ptkhsm.errors import CKRError
from ptkhsm.hsm.core import HSM
from ptkhsm.mechparams import GcmParams, Mechanism, PssParams
from ptkhsm.transport.handler import Handler

from netserver import Server


VALUES = [None, True, False, 0, 1, 2**64 - 1, -5, 2**200, b"", b"\x00" * 70000, "label", [], (),
          [(C.CKA_LABEL, b"x"), (C.CKA_WRAP_TEMPLATE, ((C.CKA_EXTRACTABLE, True),))],
          {"label": b"x", "hardware": (1, 0)}, Mechanism(C.CKM_AES_GCM, GcmParams(b"iv", 96, b"", 128)),
          Mechanism(C.CKM_SHA256_RSA_PKCS_PSS, PssParams(1, 2, 32)), Mechanism(C.CKM_AES_ECB)]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_values_round_trip(value):
    out = bytearray()
    wire.encode_value(value, out)
    assert wire.decode_value(bytes(out)) == value
    assert type(wire.decode_value(bytes(out))) is type(value)


def test_attribute_errors_cross_as_their_code():
    out = bytearray()
    wire.encode_value([b"v", CKRError(C.CKR_ATTRIBUTE_SENSITIVE, "secret reason")], out)
    got = wire.decode_value(bytes(out))
    assert got[0] == b"v" and got[1].rv == C.CKR_ATTRIBUTE_SENSITIVE


@pytest.mark.parametrize("data", [b"", b"\x04\x00\x00\x00\x05ab", b"\x63", b"\x06\xff\xff\xff\xff",
                                  b"\x03\x02\x01", b"\x00\x00", b"\x08\x00\x00\x00\x01\x04\x00\x00\x00\x00\x00",
                                  b"\x0a\x07\x00", b"\x06\x00\x00\x00\x01" * 20 + b"\x00"])
def test_malformed_values_are_protocol_errors(data):
    with pytest.raises(wire.ProtocolError):
        wire.decode_value(data)


def test_objects_that_are_not_plain_values_do_not_encode():
    with pytest.raises(TypeError):
        wire.encode_value(object(), bytearray())


def test_requests_are_checked_against_the_call_table():
    template = [(C.CKA_ALLOWED_MECHANISMS, (C.CKM_AES_CBC, C.CKM_AES_GCM)), (C.CKA_START_DATE, b"20240101"),
                (C.CKA_WRAP_TEMPLATE, ((C.CKA_EXTRACTABLE, True),))]
    assert wire.read_request(wire.request(1, "create_object", (1, template))[5:])[2] == (1, template)
    body = wire.request(7, "sign", (1, b"data", None))[5:]
    request_id, call, args = wire.read_request(body)
    assert (request_id, call.name, args) == (7, "sign", (1, b"data", None))
    for name, args in (("sign", (1, "text", None)), ("sign", (1, b"d")), ("login", (-1, 1, b"1234")),
                       ("find_init", (1, [(1, 2, 3)]))):
        out = bytearray(struct.pack(">IH", 1, calls.BY_NAME[name].id))
        wire.encode_value(tuple(args), out)
        with pytest.raises(wire.ProtocolError):
            wire.read_request(bytes(out))
    with pytest.raises(wire.ProtocolError):
        wire.read_request(struct.pack(">IH", 1, 60000) + b"\x07\x00\x00\x00\x00")


def test_the_fast_argument_reader_agrees_with_the_general_decoder():
    """read_request reads the common arguments without the general decoder (_read_args); on
    well-formed and on every one-byte change or cut of these requests, it either steps aside
    or gives exactly what the general decoder and the shape checks give (one-byte insertions
    too)."""
    requests = [("generate_random", (1, 32)), ("generate_random", (2**63 + 5, 2**64 - 1)), ("sign", (7, b"data", None)), ("sign", (7, b"", 64)),
                ("sign_init", (1, Mechanism(C.CKM_ECDSA), 5)),
                ("sign_init", (1, Mechanism(C.CKM_AES_CBC_PAD, b"\x01" * 16), 2**32)),
                ("derive_key", (1, Mechanism(C.CKM_ECDH1_DERIVE, 9), 3, [(C.CKA_LABEL, b"x")])),
                ("encrypt_init", (1, Mechanism(C.CKM_AES_GCM, GcmParams(b"iv", 96, b"", 128)), 4))]
    rng = random.Random(5)
    agreed = fast = 0
    for name, args in requests:
        call = calls.BY_NAME[name]
        good = wire.request(3, name, args)[5:]
        bodies = [good, good + b"\x07", *(good[:n] for n in range(len(good)))]
        for i in range(len(args)):   # each argument replaced by a value of another kind or range
            for wrong in (2**64, 2**72, -1, None, b"x", "s", Mechanism(2**64), Mechanism(1, 2**64),
                          Mechanism(1, -1), Mechanism(1, "s")):
                bodies.append(wire.request(3, name, (*args[:i], wrong, *args[i + 1:]))[5:])
        for pos in range(len(good)):
            for byte in {0, 1, 8, 9, 255, good[pos] ^ 1, rng.randrange(256)}:
                bodies.append(good[:pos] + bytes((byte,)) + good[pos + 1:])
                bodies.append(good[:pos] + bytes((byte,)) + good[pos:])
        for body in bodies:
            got = wire._read_args(body, wire._LAYOUTS[call.id]) if len(body) > wire._REQ.size else None
            try:
                rule = wire._decode_args(body, call)
            except (wire.ProtocolError, IndexError, struct.error):
                rule = None
            assert got is None or repr(got) == repr(rule), (name, body)
            fast += got is not None
            agreed += got is not None and repr(got) == repr(rule)
        assert wire.read_request(good)[2] == args
    assert fast == agreed and fast > 100


def test_replies_of_bytes_and_none_are_what_the_general_codec_makes_and_reads():
    """reply() packs an output or None in one piece, read_reply() reads an output without the
    general decoder: the same bytes as the general encoder, and on a well-formed, cut or
    changed reply the same value or the same refusal as the general decoder's rule."""
    for value in (None, b"", b"out", b"\x00" * 70000):
        general = bytearray(wire._REPLY_HEAD.pack(0, wire.REPLY, 9))
        wire.encode_value(value, general)
        assert wire.reply(9, value) == wire._framed(general)
    sign = calls.BY_NAME["sign"]

    def rule(body):
        try:
            value = wire.decode_value(body, 4)
        except (wire.ProtocolError, IndexError, struct.error):
            return "refused"
        return value if wire.SHAPES[sign.reply](value) else "refused"

    good = wire.reply(9, b"signature")[5:]
    bodies = [good, good + b"\x00", *(good[:n] for n in range(len(good)))]
    bodies += [good[:pos] + bytes((byte,)) + good[pos + 1:] for pos in range(len(good)) for byte in (0, 1, 5, 255)]
    for body in bodies:
        try:
            got = wire.read_reply(wire.REPLY, body, sign)[1]
        except wire.ProtocolError:
            got = "refused"
        assert got == rule(body) if len(body) >= 4 else got == "refused", body
    with pytest.raises(ValueError):
        wire.reply(9, bytes(wire.MAX_FRAME))


def test_frame_limits():
    with pytest.raises(wire.ProtocolError):
        wire.frame_length(struct.pack(">I", wire.MAX_FRAME + 1))
    with pytest.raises(wire.ProtocolError):
        wire.frame_length(struct.pack(">I", 0))


def test_handler_bytes_in_bytes_out(tmp_path):
    """The handshake makes an application; a length query crosses as a size."""
    env = {"ET_PTKC_SW_DATAPATH": str(tmp_path), "HOME": str(tmp_path), "ET_PTKC_SW_PIN_KDF_ITERATIONS": "1000"}
    hsm = HSM(Config(env))
    handler = Handler(hsm)
    with pytest.raises(wire.ProtocolError):
        handler.handle_frame(wire.request(1, "slot_list", ()))  # no handshake yet
    kind, body = _split(handler.handle_frame(wire.hello()))
    assert kind == wire.WELCOME and wire.read_welcome(body)[0] == wire.VERSION
    _, value = _result(handler, "slot_list", ())
    assert value == [0, 1, 2]
    with pytest.raises(CKRError) as info:  # an uninitialised token opens read-only sessions only
        _result(handler, "open_session", (0, C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION))
    assert info.value.rv == C.CKR_TOKEN_WRITE_PROTECTED
    handler.close()


def _split(frame):
    return frame[4], frame[5:]


def _result(handler, name, args):
    kind, body = _split(handler.handle_frame(wire.request(1, name, args)))
    return wire.read_reply(kind, body, calls.BY_NAME[name])


# -- a live server fed broken frames -------------------------------------------------------
def _connect(address):
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _handshake(sock):
    sock.sendall(wire.hello())
    n = wire.frame_length(_recv(sock, 4))
    return _recv(sock, n)


def _recv(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _call(sock, name, args):
    sock.sendall(wire.request(1, name, args))
    n = wire.frame_length(_recv(sock, 4))
    data = _recv(sock, n)
    return wire.read_reply(data[0], data[1:], calls.BY_NAME[name])[1]


def _mutations(rng, count):
    """Random bytes, broken headers, and valid requests with bytes flipped, cut or grown."""
    valid = [wire.request(1, "slot_list", ()), wire.request(2, "token_info", (0,)),
             wire.request(3, "find_init", (1, [(C.CKA_LABEL, b"x")])),
             wire.request(4, "sign", (1, b"data" * 10, 64))]
    for i in range(count):
        base = bytearray(rng.choice(valid))
        how = i % 5
        if how == 0:
            yield bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64)))
        elif how == 1:
            for _ in range(rng.randrange(1, 4)):
                base[rng.randrange(len(base))] = rng.getrandbits(8)
            yield bytes(base)
        elif how == 2:
            yield bytes(base[:rng.randrange(1, len(base))])  # truncated, then the peer hangs up
        elif how == 3:
            yield struct.pack(">I", rng.choice([0, wire.MAX_FRAME + 1, 2**32 - 1])) + b"\x03"
        else:
            cut = rng.randrange(5, len(base))
            yield bytes(base[:cut]) + bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 16)))


def test_frame_fuzz_closes_only_the_sender(tmp_path):
    """10,000 random and mutated frames, each on its own connection after the handshake;
    the server stays up, a client connected all along carries on, data intact."""
    with Server(tmp_path / "data", "tcp", workers=1) as server:
        steady = _connect(server.address)
        _handshake(steady)
        slots = _call(steady, "slot_list", ())
        info = _call(steady, "token_info", (0,))
        rng = random.Random(15)
        closed = answered = 0
        for frame in _mutations(rng, 10_000):
            sock = _connect(server.address)
            _handshake(sock)
            try:
                sock.sendall(frame)
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    answered += 1
            except OSError:
                pass
            closed += 1
            sock.close()
        assert closed == 10_000
        assert server.alive()
        assert _call(steady, "slot_list", ()) == slots
        assert _call(steady, "token_info", (0,)) == info
        steady.close()
        assert "protocol error" in server.stderr() or "closing connection" in server.stderr()


def test_admin_token_init_over_the_network_needs_its_so_on_the_connection(tmp_path):
    env = {"ET_PTKC_SW_DATAPATH": str(tmp_path), "HOME": str(tmp_path), "ET_PTKC_SW_PIN_KDF_ITERATIONS": "1000"}
    hsm = HSM(Config(env))
    admin, so = 2, b"87654321"
    local = hsm.application()  # the host's console: the first initialisation
    local.init_token(admin, so, b" " * 32)
    local.finalize()
    handler = Handler(hsm)
    handler.handle_frame(wire.hello())
    with pytest.raises(CKRError) as info:
        _result(handler, "init_token", (admin, so, b" " * 32))
    assert info.value.rv == C.CKR_ACCESS_DENIED
    _, s = _result(handler, "open_session", (admin, C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION))
    _result(handler, "login", (s, C.CKU_SO, so))
    _result(handler, "init_token", (admin, so, b" " * 32))  # allowed, and its session closed
    with pytest.raises(CKRError) as info:
        _result(handler, "session_info", (s,))
    assert info.value.rv == C.CKR_SESSION_HANDLE_INVALID
    _result(handler, "init_token", (0, b"12345678", b"user".ljust(32)))  # a user token: no admin needed
    handler.close()


def _frame(sock):
    n = wire.frame_length(_recv(sock, 4))
    data = _recv(sock, n)
    return data[0], data[1:]


def test_a_long_request_does_not_hold_up_its_connection(tmp_path):
    """A login (a PIN's KDF, 0.1 s or more) and a short call sent right behind it on the
    same connection: the short call's reply comes first (the login's thread passed the
    connection's reading on before its KDF), and then the login's."""
    env = dict(os.environ, ET_PTKC_SW_PIN_KDF_ITERATIONS="500000")
    with Server(tmp_path / "data", "tcp", workers=1, env=env) as server:
        sock = _connect(server.address)
        _handshake(sock)
        so = b"87654321"
        _call(sock, "init_token", (1, so, b"user".ljust(32)))
        session = _call(sock, "open_session", (1, C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION))
        sock.sendall(wire.request(7, "login", (session, C.CKU_SO, so)) + wire.request(8, "slot_list", ()))
        order = []
        for _ in range(2):
            kind, body = _frame(sock)
            name = {7: "login", 8: "slot_list"}[struct.unpack_from(">I", body)[0]]
            order.append((name, wire.read_reply(kind, body, calls.BY_NAME[name])[1]))
        assert order == [("slot_list", [0, 1, 2]), ("login", None)]
        sock.close()


def test_silent_and_half_frames_do_not_hold_the_server(tmp_path):
    """A peer that connects and says nothing, and one that stops mid-frame, block nobody."""
    with Server(tmp_path / "data", "tcp", workers=1) as server:
        silent = _connect(server.address)
        half = _connect(server.address)
        _handshake(half)
        half.sendall(wire.request(1, "slot_list", ())[:6])
        other = _connect(server.address)
        _handshake(other)
        assert _call(other, "slot_list", ()) == [0, 1, 2]
        for sock in (silent, half, other):
            sock.close()
        assert server.alive()
