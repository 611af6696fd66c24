"""The server's side of one connection, bytes in and bytes out.

A connection starts with the handshake (HELLO -> WELCOME), which makes it
one application of the HSM; each REQUEST frame is then checked against the
call table, run on that application and answered by a REPLY or an ERROR
frame. `close()` ends the application (a dropped connection is C_Finalize).
Any transport can drive it, and a test can drive it with plain bytes.
"""

from .. import constants as C
from .. import wire
from ..calls import OUT
from ..errors import CKRError
from ..hsm import adapter
from . import smslink as link
from ..log import logger


def _admin_slot(app):
    return len(app.tokens) - 1


# Calls that change the HSM itself, and when a call is one (args -> bool). Over the
# network they need the Admin Token's SO logged in on the same connection.
ADMIN_CALLS = {
    "init_token": lambda app, args: args[0] == _admin_slot(app),
    "set_attributes": lambda app, args: _is_adapter(app, args[1]),  # the HSM's security flags
}


def _is_adapter(app, obj_handle):
    obj = app.tokens[_admin_slot(app)].objects.get(obj_handle)
    return obj is not None and adapter.is_adapter(obj)


def admin_guard(app, call, args):
    """Changes to the HSM itself need the Admin Token's SO logged in on this connection.
    Re-initialising the Admin Token then closes that connection's own sessions on it
    (C_InitToken needs none open): the PIN given to C_InitToken is checked again."""
    applies = ADMIN_CALLS.get(call.name)
    if applies is None or not applies(app, args):
        return
    slot = _admin_slot(app)
    if app.tokens[slot].login != C.CKU_SO:
        raise CKRError(C.CKR_ACCESS_DENIED,
                       f"{call.name} changes the HSM: log the Admin Token's SO in on this connection first")
    if call.name == "init_token":
        app.close_all_sessions(slot)


class Handler:
    def __init__(self, hsm, peer="?", guard=admin_guard):
        self.hsm = hsm
        self.peer = peer
        self.app = None
        self.version = None
        self.admin_guard = guard
        self.sms = None   # the SMS channel, once the client asked for one
        self.required = 0

    def handle(self, kind, body):
        """One frame (type, body) -> the reply frame. Raises wire.ProtocolError."""
        if self.app is None:
            if kind != wire.HELLO:
                raise wire.ProtocolError("the handshake must come first")
            low, high = wire.read_hello(body)
            if not low <= wire.VERSION <= high:
                raise wire.ProtocolError(f"client speaks versions {low}..{high}, this server {wire.VERSION}")
            self.version = wire.VERSION
            self.app = self.hsm.application()
            self.required = self.hsm.security_mode & link.SMS_FLAGS  # SMS: what this HSM demands
            return wire.welcome(self.version, {"serial": self.hsm.serial, "max_frame": wire.MAX_FRAME,
                                               "security_mode": self.hsm.security_mode})
        if kind == wire.SMS:
            if self.sms is None:
                self.sms = link.ServerLink(self.hsm)
            return self.sms.receive(body, self._request)
        if kind != wire.REQUEST:
            raise wire.ProtocolError(f"unexpected frame type {kind}")
        return self._run(*wire.read_request(body), 0)

    def _request(self, body, protection):
        """A REQUEST body that came with `protection` (0: a plain frame) -> (Call, reply frame)."""
        request_id, call, args = wire.read_request(body)
        return call, self._run(request_id, call, args, protection)

    def _run(self, request_id, call, args, protection):
        try:
            if self.required:
                link.check(self.required, call, protection)
            if self.admin_guard is not None:
                self.admin_guard(self.app, call, args)
            value = getattr(self.app, call.name)(*args)
            if call.name == "finalize":
                self.app = self.hsm.application()  # a C_Initialize may follow on this connection
            if call.reply == OUT:
                value = fit(value, args[-1])
            return wire.reply(request_id, value)
        except CKRError as exc:
            return wire.error(request_id, exc)
        except MemoryError:
            return wire.error(request_id, CKRError(C.CKR_HOST_MEMORY, "out of memory"))
        except Exception:
            logger.exception("internal error in %s from %s", call.name, self.peer)
            return wire.error(request_id, CKRError(C.CKR_GENERAL_ERROR, "internal error"))

    def handle_frame(self, data):
        """A whole frame, length prefix included -> the reply frame."""
        if len(data) < 4:
            raise wire.ProtocolError("truncated frame")
        n = wire.frame_length(data[:4])
        if len(data) != 4 + n:
            raise wire.ProtocolError("frame length does not match its header")
        return self.handle(data[4], data[5:])

    def close(self):
        if self.app is not None:
            self.app.finalize()
            self.app = None


def fit(result, out_len):
    """An output crosses only if it fits the caller's buffer; otherwise its size does."""
    if out_len is None or len(result) > out_len:
        return len(result)
    return result
