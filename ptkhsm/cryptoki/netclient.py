"""The client interface over the network: a proxy to `ptkhsm serve`.

Its methods are generated from the call table, so they are the HSM's
(docs/seams.md). The application is one connection to one server of
`ET_HSM_NETCLIENT_SERVERLIST`. Session handles, and the handles of session
objects, are the proxy's own (virtual), mapped to the server's; token objects
keep theirs (a token object's handle is its store row, the same on every
server of one store).

NORMAL mode: when a server is lost its sessions answer CKR_DEVICE_REMOVED and
new sessions go to the next server of the list.

HA mode (`ET_PTKC_GENERAL_LIBRARY_MODE=HA`): the proxy records each
session's state — logins, the find in progress and what it returned, the
inputs of multi-part operations, the calls that made its session objects —
and when its server is lost replays it on the next one and retries the call,
so the application sees no error. docs/network.md says what survives.
An output the caller's buffer cannot hold comes back as its size (an int);
the ABI reports it like a length query.
"""

import hashlib  # noqa: F401  (see below)
import itertools
import threading
import time

from .. import constants as C
from .. import mechparams as P
from ..calls import BY_NAME, CALLS, MECHANISM, SESSION_HANDLES
from ..errors import CKRError
from ..log import logger
from ..transport.smslink import SMS_RVS, ClientSettings
from ..transport.channel import Channel

# `import hashlib` loads Python's _hashlib, which initialises the host's libcrypto.
# pkcs11-tool (OpenSC 0.23) builds EC public keys with that libcrypto without
# initialising it, relying on the module having done so (SoftHSMv2 does; the embedded
# HSM does through hashlib); without it `--read-object --type pubkey` of a P-256 key
# fails with "cannot create EVP_PKEY" (tests/mechanisms/test_openssl_interop.py).
OBJECT_ARGS = {"obj_handle", "key", "key_handle", "wrapping_handle", "unwrapping_handle", "base_handle"}
MAKERS = {"create_object", "copy_object", "derive_key", "unwrap_key"}   # replayable: same object again
RANDOM_MAKERS = {"generate_key", "generate_key_pair"}                   # a new random key each time
OPERATIONS = ("encrypt", "decrypt", "digest", "sign", "verify")
_CANCEL = {C.CKF_ENCRYPT: "encrypt", C.CKF_DECRYPT: "decrypt", C.CKF_DIGEST: "digest", C.CKF_SIGN: "sign",
           C.CKF_VERIFY: "verify"}
CKR_HA_NO_HSM, CKR_HA_OBJECT_LOST = C.CKR_HA_NO_HSM, C.CKR_HA_OBJECT_LOST  # docs/network.md
# Per call id: the positions of the arguments naming objects, and of the mechanisms (whose
# parameter may name a key): they cross as the server's handles.
_HANDLE_ARGS = {call.id: (tuple(i for i, (name, _) in enumerate(call.args) if name in OBJECT_ARGS),
                          tuple(i for i, (_, kind) in enumerate(call.args) if kind == MECHANISM))
                for call in CALLS}
# The calls whose results _record turns into virtual handles outside HA mode too.
_RECORDED = MAKERS | RANDOM_MAKERS | {"destroy_object", "find", "find_all"}


def _kind_of_call(name):
    """'sign_update' -> ('sign', 'update'); 'digest_key' is an update of a digest."""
    if name == "digest_key":
        return "digest", "update"
    op, _, step = name.partition("_")
    return (op, step or "oneshot") if op in OPERATIONS else (None, None)


class VSession:
    __slots__ = ("handle", "slot", "flags", "server", "ops", "find")

    def __init__(self, handle, slot, flags, server):
        self.handle, self.slot, self.flags, self.server = handle, slot, flags, server
        self.ops = {}     # kind -> [init call name, init args, [(update call name, args)...]]
        self.find = None  # [template, handles returned, rest served by the client after a recovery]


class SessionObject:
    __slots__ = ("session", "recipe", "server")

    def __init__(self, session, recipe, server):
        self.session, self.recipe, self.server = session, recipe, server  # recipe None: cannot be remade


class NetClient:
    def __init__(self, config, servers):
        self.servers = servers
        self.connect_timeout = config.get("ET_HSM_NETCLIENT_CONNECT_TIMEOUT")
        self.reply_timeout = config.get("ET_HSM_NETCLIENT_REPLY_TIMEOUT")
        self.poll = config.get("ET_HSM_NETCLIENT_POLL_US") / 1e6
        self.reconnect = config.get("ET_HSM_NETCLIENT_RECONNECT")
        self.ha = config.get("ET_PTKC_GENERAL_LIBRARY_MODE") == "HA"
        self.recover_delay = config.get("ET_PTKC_HA_RECOVER_DELAY") * 60.0
        self.recover_wait = config.get("ET_PTKC_HA_RECOVER_WAIT")
        self._lock = threading.RLock()
        self.sms = ClientSettings(config)   # SMS: channels per connection when needed (docs/sms.md)
        self._channel = None
        self._generation = 0
        self._failed = {}      # server index -> when it was lost (HA: not retried before the delay)
        self._index = None
        self._sessions = {}    # virtual handle -> VSession (NORMAL: with the channel in .server)
        self._objects = {}     # virtual handle -> SessionObject
        self._virtual = {}     # server handle -> virtual handle, for the current channel
        self._logins = {}      # slot -> (user type, PIN), HA only: replayed after a fail-over
        self._handles = itertools.count(1).__next__
        self._object_handles = itertools.count(SESSION_HANDLES).__next__
        self._connect()

    # -- connections -------------------------------------------------------------------
    def _connect(self):
        """Connect to the first server that answers, starting after the current one.

        HA: a server lost less than ET_PTKC_HA_RECOVER_DELAY ago is tried only after every
        other (the delay spares a recovery the time-out of a server that is still down; it
        must not fail an application whose one live server came back early), and with a
        delay of 0 a lost server is never tried again."""
        failures = []
        start = 0 if self._index is None else self._index + 1
        order = [(start + i) % len(self.servers) for i in range(len(self.servers))]
        now = time.monotonic()
        if self.ha:
            lost = [i for i in order if i in self._failed]
            if not self.recover_delay:
                failures += [f"{self.servers[i]}: lost, never retried (ET_PTKC_HA_RECOVER_DELAY=0)" for i in lost]
                order = [i for i in order if i not in lost]
            else:
                resting = [i for i in lost if now - self._failed[i] < self.recover_delay]
                order = [i for i in order if i not in resting] + resting
        for index in order:
            try:
                channel = Channel(self.servers[index], self.connect_timeout, self.reply_timeout, self.sms, self.poll)
            except CKRError as exc:
                if exc.rv in SMS_RVS:
                    raise   # SMS: a server that fails the channel (a MITM, a swapped HSM) fails closed
                self._failed[index] = now
                failures.append(str(exc))
                continue
            self._failed.pop(index, None)
            if self._channel is not None:
                logger.warning("fail-over from %s to %s", self._channel.address, channel.address)
                self._channel.close()
            self._channel, self._index = channel, index
            self._generation += 1
            self._virtual = {}
            if not self.ha:
                self._objects = {}  # they lived in the sessions of the lost server
            return channel
        raise CKRError(CKR_HA_NO_HSM if self.ha else C.CKR_DEVICE_ERROR,
                       "no HSM server reachable: " + "; ".join(failures))

    def channel(self):
        """The connection for calls without a session: a lost server is replaced."""
        channel = self._channel
        if channel.broken is not None and (self.reconnect or self.ha):  # the lock only then
            with self._lock:
                if self.ha:
                    self._recover(self._generation)
                elif self._channel is channel:  # no other thread replaced it meanwhile
                    self._failed[self._index] = time.monotonic()
                    self._connect()
        return self._channel

    @property
    def sms_link(self):
        """The SMS channel of the current connection, or None (ctconf shows its identity)."""
        return self._channel.link

    def session(self, handle):
        vs = self._sessions.get(handle)
        if vs is None:
            raise CKRError(C.CKR_SESSION_HANDLE_INVALID, f"session {handle}")
        return vs

    # -- handles -----------------------------------------------------------------------
    def _to_server(self, handle):
        if handle < SESSION_HANDLES:
            return handle  # token objects keep their handle on every server
        obj = self._objects.get(handle)
        if obj is None:
            # Every session object this application can see was made through this proxy:
            # an unknown one is invalid, and CK_INVALID_HANDLE gets the server's code for it.
            return C.CK_INVALID_HANDLE
        if obj.server is None:
            raise CKRError(CKR_HA_OBJECT_LOST, f"session object {handle} was a random key lost with its HSM")
        return obj.server

    def _to_virtual(self, server_handle):
        if server_handle < SESSION_HANDLES:
            return server_handle
        virtual = self._virtual.get(server_handle)
        if virtual is None:  # a session object another call of ours made
            virtual = self._virtual[server_handle] = self._object_handles()
            self._objects[virtual] = SessionObject(None, None, server_handle)
        return virtual

    def _server_args(self, call, args, vs):
        objects, mechanisms = _HANDLE_ARGS[call.id]
        if vs is not None:
            args = (vs.server if self.ha else vs.server[1], *args[1:])
        if not (objects or mechanisms):
            return args
        out = list(args)
        for i in objects:
            out[i] = self._to_server(out[i])
        for i in mechanisms:
            if out[i].type in P.KEY_HANDLE_MECHANISMS and type(out[i].param) is int:
                out[i] = P.Mechanism(out[i].type, self._to_server(out[i].param))
        return tuple(out)

    # -- the call path -----------------------------------------------------------------
    def _invoke(self, call, args):
        for attempt in (0, 1):
            generation = self._generation
            if call.session:
                vs = self._sessions.get(args[0]) or self.session(args[0])  # the latter raises
                channel = self._channel if self.ha else vs.server[0]
            else:
                vs, channel = None, self.channel()
            try:
                result = channel.call(call, self._server_args(call, args, vs))
            except CKRError as exc:
                if exc.rv == C.CKR_DEVICE_REMOVED and self.ha and not attempt:
                    self._recover(generation)
                    continue  # the same call again, on the HSM the state now lives on
                if vs is not None and self.ha:
                    self._failed_call(call, vs, exc)
                raise
            if self.ha or call.name in _RECORDED:
                return self._record(call, args, result, vs)
            return result

    def _record(self, call, args, result, vs):
        """Turn server handles into ours and remember what a replay needs (HA)."""
        name = call.name
        if name in MAKERS or name in RANDOM_MAKERS:
            results = result if type(result) is tuple else (result,)
            virtual = []
            for server_handle in results:
                v = self._to_virtual(server_handle)
                if v >= SESSION_HANDLES:
                    self._objects[v].session = args[0]
                    self._objects[v].recipe = (name, args) if name in MAKERS else None
                virtual.append(v)
            return tuple(virtual) if type(result) is tuple else virtual[0]
        if name == "destroy_object":
            self._objects.pop(args[1], None)
            return result
        if name == "find" or name == "find_all":
            found = [self._to_virtual(h) for h in result]
            if name == "find" and self.ha and vs.find is not None:
                vs.find[1].update(found)
            return found
        if not self.ha or vs is None:
            return result
        if name == "login" and args[1] != C.CKU_CONTEXT_SPECIFIC:
            self._logins[vs.slot] = (args[1], args[2])
        elif name == "logout":
            self._logins.pop(vs.slot, None)
        elif name == "find_init":
            vs.find = [args[1], set(), None]
        elif name == "find_final":
            vs.find = None
        elif name == "cancel":
            for flag, kind in _CANCEL.items():
                if args[1] & flag:
                    vs.ops.pop(kind, None)
            if args[1] & C.CKF_FIND_OBJECTS:
                vs.find = None
        else:
            kind, step = _kind_of_call(name)
            if kind is None:
                return result
            if step == "init":
                vs.ops[kind] = [name, args[1:], []]
            elif step == "update":
                if type(result) is not int and kind in vs.ops:  # an int: a length query, not done yet
                    vs.ops[kind][2].append((name, args[1:]))
            elif type(result) is not int:  # single-part or final, delivered: the operation is over
                vs.ops.pop(kind, None)
        return result

    def _failed_call(self, call, vs, exc):
        """A failed step ends its operation on the server (BUFFER_TOO_SMALL excepted)."""
        kind, step = _kind_of_call(call.name)
        if kind is not None and step != "init" and exc.rv != C.CKR_BUFFER_TOO_SMALL:
            vs.ops.pop(kind, None)

    # -- recovery (HA) -----------------------------------------------------------------
    def _recover(self, generation):
        """Move the application to the next working HSM and replay its state there."""
        with self._lock:
            if generation != self._generation and self._channel.broken is None:
                return  # another thread recovered already
            if self._index is not None:
                self._failed[self._index] = time.monotonic()
            deadline = time.monotonic() + (self.reply_timeout or 600)
            while True:
                try:
                    self._connect()
                    self._replay()
                    return
                except CKRError as exc:
                    if exc.rv not in (CKR_HA_NO_HSM, C.CKR_DEVICE_REMOVED) or not self.recover_wait \
                            or time.monotonic() > deadline:
                        raise
                    time.sleep(1)

    def _replay(self):
        channel = self._channel

        def run(name, *args):
            return channel.call(BY_NAME[name], args)

        for vs in list(self._sessions.values()):  # a finalizer may close one meanwhile
            vs.server = run("open_session", vs.slot, vs.flags)
        for slot, (user_type, pin) in list(self._logins.items()):
            anyone = next((vs for vs in list(self._sessions.values()) if vs.slot == slot), None)
            if anyone is not None:
                run("login", anyone.server, user_type, pin)
        for virtual, obj in list(self._objects.items()):
            obj.server = None
            if obj.recipe is None:
                continue  # a random key: lost with its HSM
            name, args = obj.recipe
            vs = self._sessions.get(obj.session)
            if vs is None:
                continue
            obj.server = channel.call(BY_NAME[name], self._server_args(BY_NAME[name], args, vs))
            self._virtual[obj.server] = virtual
        for vs in list(self._sessions.values()):
            if vs.find is not None:
                template, returned, rest = vs.find
                if rest is None:
                    everything = [self._to_virtual(h) for h in run("find_all", vs.server, template)]
                    vs.find[2] = [h for h in everything if h not in returned]
            for kind, (init, init_args, updates) in list(vs.ops.items()):
                call = BY_NAME[init]
                channel.call(call, self._server_args(call, (vs.handle, *init_args), vs))
                for name, update_args in updates:
                    call = BY_NAME[name]
                    channel.call(call, self._server_args(call, (vs.handle, *update_args), vs))
        logger.warning("recovered %d sessions on %s", len(self._sessions), channel.address)

    # -- calls that are more than forwarding -------------------------------------------
    def open_session(self, slot_id, flags):
        for attempt in (0, 1):
            generation = self._generation
            channel = self.channel()
            try:
                server_handle = channel.call(BY_NAME["open_session"], (slot_id, flags))
                break
            except CKRError as exc:
                if exc.rv != C.CKR_DEVICE_REMOVED or attempt or not self.ha:
                    raise
                self._recover(generation)
        # No lock: a call nested here by a finalizer must not wait for one its thread holds
        # while another thread's nested call waits for this thread's reply (dict and counter
        # steps are atomic).
        handle = self._handles()
        server = server_handle if self.ha else (channel, server_handle)
        self._sessions[handle] = VSession(handle, slot_id, flags, server)
        return handle

    def close_session(self, handle):
        vs = self.session(handle)
        try:
            self._invoke(BY_NAME["close_session"], (handle,))
        finally:
            self._forget(vs)

    def _forget(self, vs):
        self._sessions.pop(vs.handle, None)  # no lock, as in open_session
        for virtual, obj in list(self._objects.items()):
            if obj.session == vs.handle:
                self._objects.pop(virtual, None)
        if not any(s.slot == vs.slot for s in list(self._sessions.values())):
            self._logins.pop(vs.slot, None)  # the last session's close logs out

    def close_all_sessions(self, slot_id):
        self._invoke(BY_NAME["close_all_sessions"], (slot_id,))
        for vs in [s for s in list(self._sessions.values()) if s.slot == slot_id]:
            self._forget(vs)

    def find(self, handle, max_count):
        vs = self.session(handle)
        if self.ha and vs.find is not None and vs.find[2] is not None:
            rest = vs.find[2]
            out, vs.find[2] = rest[:max_count], rest[max_count:]
            vs.find[1].update(out)
            return out
        return self._invoke(BY_NAME["find"], (handle, max_count))

    def find_final(self, handle):
        vs = self.session(handle)
        if self.ha and vs.find is not None and vs.find[2] is not None:
            vs.find = None  # the server's find ended when the client took over the rest
            return None
        return self._invoke(BY_NAME["find_final"], (handle,))

    def finalize(self):
        """C_Finalize: the server ends the application when its connection closes. No
        reply is awaited: at interpreter exit (python-pkcs11 finalizes from a
        destructor) the thread that would read it is already gone."""
        self._channel.send_only(BY_NAME["finalize"], ())
        self._channel.close()
        if not self.ha:
            for vs in list(self._sessions.values()):
                vs.server[0].close()
        self._sessions.clear()
        self._objects.clear()
        self._logins.clear()

    close_everything = finalize


def _forward(call):
    def method(self, *args):
        return self._invoke(call, args)
    method.__name__ = call.name
    method.__doc__ = f"{', '.join(call.functions)} on the server"
    return method


for _call in CALLS:
    if not hasattr(NetClient, _call.name):
        setattr(NetClient, _call.name, _forward(_call))


def connect(config, servers):
    return NetClient(config, servers)
