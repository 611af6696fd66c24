"""SMS records on a frame transport: the record layer both transports hook at one place.

A frame of type SMS (`wire.SMS`) carries one SMS record (channel.py). The
handshake records (HELLO, ACCEPT, FINISHED) travel in such frames right after
the transport's WELCOME; then every call that takes a session handle crosses
as a DATA record:

    request payload: u8 reply protection the client asks for (its R), then the
                     REQUEST frame's type byte and body
    reply payload:   the REPLY or ERROR frame's type byte and body

protected per `policy.protection` (the HSM's flags OR'ed with the client's
SMPR). Calls without a session cross as plain frames, as the seed says. A
record that fails on the HSM ends the channel and the connection after a
plain ERROR frame of request id 0 naming the CKR; on the client it ends the
channel, and every call in flight or later gets that CKR.

`ClientLink` (the client side) and `ServerLink` (the HSM's side) are all the
transports see: `seal`/`open` on the client, `receive` on the HSM.
"""

import functools
import time

from .. import constants as C
from .. import wire
from ..calls import BY_ID
from ..errors import CKRError
from ..sms import channel as ch
from ..sms.policy import SMS_FLAGS, check_request, parse_smpr, protection, wanted

_PROTECTION = ch.ENCRYPTED | ch.SIGNED
SMS_RVS = frozenset(range(C.CKR_CANNOT_DERIVE_KEYS, C.CKR_KEY_ROLLOVER + 1))


def sensitive(call):
    """Does the request of this call carry a PIN or a secret (the call table says)?"""
    return bool(call.pins or any(name != "reply" for name in call.secrets))


@functools.lru_cache(maxsize=64)   # a process sees a handful of flag sets
def plan(flags):
    """call id -> (request protection, reply protection) under `flags`, made once per flag
    set: a look-up per call instead of the policy's tests. Callers only read it."""
    return {call.id: protection(flags, call.session, sensitive(call)) for call in BY_ID.values()}


class ClientSettings:
    """What the client's configuration says about SMS, per HSM serial."""

    def __init__(self, config, clock=time.monotonic):
        self.config, self.clock = config, clock
        self.mode = ch.MODE_NAMES[config.get("ET_PTKC_SMS_MODE")]
        self.blocks = config.get("ET_PTKC_SMS_BLOCKS")
        self.hours = config.get("ET_PTKC_SMS_HOURS")

    def smpr(self, serial):
        name = f"ET_PTKC_{serial}_SMPR"
        return parse_smpr(name, self.config.get_for(serial, "ET_PTKC_<serial>_SMPR"))

    def pin(self, serial):
        return self.config.get_for(serial, "ET_PTKC_<serial>_SMS_IDENTITY") or None

    def needed(self, serial, hsm_flags):
        """A channel is made when the HSM's flags or the SMPR ask for one, or an identity is
        pinned (a pin means: talk to this HSM only)."""
        return wanted((hsm_flags & SMS_FLAGS) | self.smpr(serial)) or self.pin(serial) is not None


class ClientLink:
    """The client's side of an SMS channel over one connection."""

    def __init__(self, settings, serial, exchange):
        """`exchange(frame bytes) -> (type, body)`: sends one frame, reads the next (the
        connection is the client's alone during the handshake)."""
        handshake = ch.ClientHandshake(settings.mode, settings.pin(serial), settings.blocks, settings.hours,
                                       settings.clock)
        accept = _expect_sms(*exchange(wire.frame(wire.SMS, handshake.hello())))
        finished = handshake.finish(accept)
        self.channel = handshake.confirm(_expect_sms(*exchange(wire.frame(wire.SMS, finished))))
        self.hsm = handshake.hsm   # serial, firmware, flags, fingerprint: authenticated by the handshake
        if self.hsm["serial"] != serial:
            raise CKRError(C.CKR_CANNOT_DERIVE_KEYS,
                           f"SMS: the HSM says serial {self.hsm['serial']} in the handshake, {serial} before")
        self.flags = (self.hsm["flags"] & SMS_FLAGS) | settings.smpr(serial)
        self.plan = plan(self.flags)
        self._expect = {}   # request id -> reply protection required

    def seal(self, call, request_id, data):
        """A request frame -> what crosses: plain for calls without a session, else a record.
        Called in send order (the sender's lock): sequence numbers follow the socket's order."""
        if not call.session:
            return data
        request, reply = self.plan[call.id]
        self._expect[request_id] = reply
        return wire.frame(wire.SMS, self.channel.seal(bytes([reply]) + data[4:], request))

    def open(self, kind, body):
        """A frame read off the connection -> the (type, body) of the reply it carries."""
        if kind != wire.SMS:
            if kind == wire.ERROR and body[:4] == b"\0\0\0\0":
                wire.read_reply(kind, body, None)   # the HSM ended the channel: raises its CKR
            if len(body) >= 4 and self._expect.pop(int.from_bytes(body[:4], "big"), 0):
                raise CKRError(C.CKR_BAD_REPLY, "SMS: an unprotected reply to a protected request")
            return kind, body
        record_kind, got, payload = self.channel.unseal(body)
        if record_kind != ch.DATA or len(payload) < 5 or payload[0] not in (wire.REPLY, wire.ERROR):
            self.channel.channel.end()
            raise CKRError(C.CKR_NO_SESSION_KEYS if record_kind == ch.CLOSE else C.CKR_SMS_ERROR,
                           "SMS: the HSM ended the channel" if record_kind == ch.CLOSE
                           else "SMS: unexpected record from the HSM")
        need = self._expect.pop(int.from_bytes(payload[1:5], "big"), 0)
        if need & ~got:
            self.channel.channel.end()
            raise CKRError(C.CKR_BAD_REPLY, "SMS: a reply with less protection than required")
        return payload[0], payload[1:]

    @property
    def counters(self):
        return self.channel.counters


def _expect_sms(kind, body):
    if kind == wire.ERROR:
        wire.read_reply(kind, body, None)   # the HSM refused the channel: raises its CKR
    if kind != wire.SMS:
        raise CKRError(C.CKR_CANNOT_DERIVE_KEYS, f"SMS: the HSM answered the handshake with frame type {kind}")
    return body


class Farewell(wire.ProtocolError):
    """A record the HSM could not accept: `frame` (a plain ERROR of request id 0 with the
    CKR) goes to the client, then the connection closes."""

    def __init__(self, exc):
        super().__init__(str(exc.args[0]) if exc.args else "SMS error")
        self.frame = wire.error(0, exc)


def check(flags, call, got):
    """The HSM's rule: a session call under less protection than its flags require is
    refused (CKR_BAD_PROTECTION); `got` is the record's protection, 0 for a plain frame."""
    if plan(flags & SMS_FLAGS)[call.id][0] & ~got:
        check_request(flags, call.session, sensitive(call), got)   # raises, saying what is missing


class ServerLink:
    """The HSM's side: the handshake, then DATA records in, sealed replies out."""

    def __init__(self, hsm):
        self.hsm = hsm
        self.flags = hsm.security_mode & SMS_FLAGS
        self.plan = plan(self.flags)
        self.handshake = self.channel = None

    def receive(self, body, run):
        """One SMS record -> the frame to send back. `run(REQUEST body, protection it came
        with) -> (Call or None, reply frame)`. Raises Farewell when the channel fails."""
        try:
            if self.channel is None:
                return wire.frame(wire.SMS, self._handshake(body))
            kind, got, payload = self.channel.unseal(body)
            if kind == ch.CLOSE:
                self.channel = None
                return b""
            if kind != ch.DATA or len(payload) < 2 or payload[1] != wire.REQUEST:
                raise CKRError(C.CKR_SMS_ERROR, "SMS: a DATA record carrying a request was expected")
            asked = payload[0] & _PROTECTION
            call, reply = run(payload[2:], got)
            own = self.plan[call.id][1] if call is not None else 0
            return wire.frame(wire.SMS, self.channel.seal(reply[4:], own | asked))
        except CKRError as exc:
            if self.channel is not None:
                self.channel.channel.end()
            raise Farewell(exc) from None

    def _handshake(self, record):
        if self.handshake is None:
            self.handshake = ch.ServerHandshake(self.hsm.identity, self.hsm.serial, self.hsm.firmware,
                                                self.hsm.security_mode, self.hsm.config.get("ET_PTKC_SMS_BLOCKS"))
            return self.handshake.accept(record)
        finished, self.channel = self.handshake.confirm(record)
        self.handshake = None
        return finished

