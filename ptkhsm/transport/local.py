"""The in-process transport with Secure Messaging: PTK-C's PCI path when SMS is on.

With no SMS flag on the HSM and no SMPR the embedded client calls its
Application directly (no codec, no cost). When either asks for protection,
the client library encodes each call with the wire codec, seals it on an SMS
channel and hands the frame to the HSM's dispatcher (the same `Handler` the
network server runs), so the same records, checks and refusals apply on both
transports. `TAP` lets a test see and change every frame that crosses.

Calls of one application are serialised on its channel (one record in flight:
the sequence numbers follow the calls' order). No garbage collection runs while a
thread holds a channel (ptkhsm/transport/collector.py): from before a call takes
the channel until it has let it go.
"""

import itertools
import threading

from .. import constants as C
from .. import wire
from ..calls import CALLS
from ..errors import CKRError
from . import collector
from . import smslink as link
from .handler import Handler

TAP = None  # tests: TAP(direction, frame) -> frame, direction "request" or "reply"


def _frame(data):
    return data[4], data[5:]


class LocalChannel:
    def __init__(self, hsm, settings):
        self.handler = Handler(hsm, "in-process", guard=None)  # the host is the HSM's console
        # Re-entrant: a call nested in the HSM's handling of this thread's call (a signal
        # handler's) runs whole there, its records in order on both sides (sealed after the
        # outer request was opened, answered before the outer reply is sealed).
        self._lock = threading.RLock()
        # Each call its own request id: a nested call must not take the outer one's expected
        # reply protection (smslink keeps it per id).
        self._new_id = itertools.count(1).__next__
        self.broken = None
        _, info = wire.read_welcome(_frame(self._exchange(wire.hello()))[1])
        self.link = link.ClientLink(settings, str(info["serial"]), lambda data: _frame(self._exchange(data)))

    def _exchange(self, data):
        if TAP is not None:
            data = TAP("request", data)
        try:
            reply = self.handler.handle_frame(data)
        except link.Farewell as exc:      # the HSM ended the channel
            reply = exc.frame
        except wire.ProtocolError as exc:
            self.broken = CKRError(C.CKR_DEVICE_ERROR, f"in-process transport: {exc}")
            raise self.broken from None
        if TAP is not None:
            reply = TAP("reply", reply)
        return reply

    def call(self, call, args):
        try:
            request_id = self._new_id() & 0xFFFFFFFF
            data = wire.request(request_id, call.name, args)
        except (ValueError, TypeError) as exc:
            raise CKRError(C.CKR_DATA_LEN_RANGE if isinstance(exc, ValueError) else C.CKR_ARGUMENTS_BAD,
                           f"{call.name}: {exc}") from None
        collector.hold()
        try:
            with self._lock:
                if self.broken is not None:
                    raise self.broken
                try:
                    kind, body = self.link.open(*_frame(self._exchange(self.link.seal(call, request_id, data))))
                except CKRError as exc:
                    if exc.rv in link.SMS_RVS:
                        self.broken = exc     # the channel has ended: so has this application
                    raise
        finally:
            collector.release()
        return wire.read_reply(kind, body, call)[1]

    def close(self):
        self.handler.close()


class LocalApi:
    """The client interface (docs/seams.md) over a LocalChannel."""

    def __init__(self, channel):
        self.channel = channel

    @property
    def sms_link(self):
        return self.channel.link

    def finalize(self):
        try:
            self.channel.call(_FINALIZE, ())
        except CKRError:
            pass  # an ended channel: the application ends all the same
        self.channel.close()

    close_everything = finalize


def _forward(call):
    def method(self, *args):
        return self.channel.call(call, args)
    method.__name__ = call.name
    return method


_FINALIZE = next(c for c in CALLS if c.name == "finalize")
for _call in CALLS:
    if not hasattr(LocalApi, _call.name):
        setattr(LocalApi, _call.name, _forward(_call))
