"""The client interface over the network: a proxy to `ptkhsm serve`.

Its methods are generated from the call table, so they are the HSM's
(docs/seams.md). The application is one connection to one server of
`ET_HSM_NETCLIENT_SERVERLIST`. Session handles are the proxy's own, mapped to
(connection, server handle): when a server is lost, its sessions answer
CKR_DEVICE_REMOVED and can never be confused with sessions opened later on
the next server of the list (fail-over for C_Initialize and new sessions).
An output the caller's buffer cannot hold comes back as its size (an int);
the ABI reports it like a length query.
"""

import itertools
import threading

from .. import constants as C
from ..calls import CALLS
from ..errors import CKRError
from ..log import logger
from ..transport.channel import Channel


class NetClient:
    def __init__(self, config, servers):
        self.servers = servers
        self.connect_timeout = config.get("ET_HSM_NETCLIENT_CONNECT_TIMEOUT")
        self.reply_timeout = config.get("ET_HSM_NETCLIENT_REPLY_TIMEOUT")
        self.reconnect = config.get("ET_HSM_NETCLIENT_RECONNECT")
        self._lock = threading.Lock()
        self._channel = None
        self._next_server = 0
        self._sessions = {}  # proxy handle -> (channel, server handle, slot)
        self._handles = itertools.count(1).__next__
        self._connect()

    # -- connections -------------------------------------------------------------------
    def _connect(self):
        """Connect to the first server of the list that answers, from where the last one was."""
        failures = []
        for i in range(len(self.servers)):
            index = (self._next_server + i) % len(self.servers)
            try:
                channel = Channel(self.servers[index], self.connect_timeout, self.reply_timeout)
            except CKRError as exc:
                failures.append(str(exc))
                continue
            if self._channel is not None:
                logger.warning("fail-over from %s to %s", self._channel.address, channel.address)
            self._channel = channel
            self._next_server = (index + 1) % len(self.servers)
            return channel
        raise CKRError(C.CKR_DEVICE_ERROR, "no HSM server reachable: " + "; ".join(failures))

    def channel(self):
        """The connection for calls without a session: a lost server is replaced."""
        with self._lock:
            channel = self._channel
            if channel.broken is not None and self.reconnect:
                channel = self._connect()
            return channel

    def session(self, handle):
        entry = self._sessions.get(handle)
        if entry is None:
            raise CKRError(C.CKR_SESSION_HANDLE_INVALID, f"session {handle}")
        return entry

    # -- calls that are more than forwarding -------------------------------------------
    def open_session(self, slot_id, flags):
        channel = self.channel()
        server_handle = channel.call(_CALLS["open_session"], (slot_id, flags))
        with self._lock:
            handle = self._handles()
            self._sessions[handle] = (channel, server_handle, slot_id)
        return handle

    def close_session(self, handle):
        channel, server_handle, _ = self.session(handle)
        try:
            channel.call(_CALLS["close_session"], (server_handle,))
        finally:
            self._sessions.pop(handle, None)

    def close_all_sessions(self, slot_id):
        self.channel().call(_CALLS["close_all_sessions"], (slot_id,))
        with self._lock:
            for handle in [h for h, (_, _, slot) in self._sessions.items() if slot == slot_id]:
                del self._sessions[handle]

    def finalize(self):
        """C_Finalize: the server ends the application when its connection closes. No
        reply is awaited: at interpreter exit (python-pkcs11 finalizes from a
        destructor) the thread that would read it is already gone."""
        self._channel.send_only(_CALLS["finalize"], ())
        self._channel.close()
        self._sessions.clear()

    close_everything = finalize


def _forward(call):
    if call.session:
        def method(self, handle, *args):
            channel, server_handle, _ = self.session(handle)
            return channel.call(call, (server_handle, *args))
    else:
        def method(self, *args):
            return self.channel().call(call, args)
    method.__name__ = call.name
    method.__doc__ = f"{', '.join(call.functions)} on the server"
    return method


_CALLS = {call.name: call for call in CALLS}
for _call in CALLS:
    if not hasattr(NetClient, _call.name):
        setattr(NetClient, _call.name, _forward(_call))


def connect(config, servers):
    return NetClient(config, servers)
