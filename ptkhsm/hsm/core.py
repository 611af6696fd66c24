"""The HSM "firmware": slots, tokens, sessions, objects and operations.

Its public methods are the PKCS#11 functions with Python values (bytes, ints,
templates as lists of (type, value)); the client reaches them through a
transport. Failures raise CKRError. Output-producing methods take `out_len`,
the size of the caller's buffer (None for a length query), so the session can
keep an operation alive across the length-query convention.

Locking: `_lock` guards the tables (sessions, objects, login state); crypto
runs outside it, so threads sign in parallel while `cryptography` releases
the GIL.
"""

import os
import threading

from .. import constants as C
from .. import gate
from ..errors import CKRError
from . import access, adapter, operations, policy
from .mechanisms import REGISTRY, lookup
from .objects import SESSION_HANDLES, Handles, Obj, ObjectTable, matches
from .session import DECRYPT, DIGEST, ENCRYPT, FINAL, FIND, ONESHOT, SIGN, UPDATE, VERIFY, Session
from .store import open_store
from .token import PinPolicy, Token

MANUFACTURER = "ptkhsm project"
MODEL = "ptkhsm"
FIRMWARE = (5, 10)      # reported like a PTK-C HSM newer than 5.01.00 (SMS ADH2 era)
HARDWARE = (1, 0)
VERSION = (3, 0)


def _pad(text, size):
    raw = text.encode() if isinstance(text, str) else bytes(text)
    return raw[:size].ljust(size, b" ")


class HSM:
    """What the applications share: the tokens, their token objects and the store."""

    def __init__(self, config):
        self.config = config
        self.store = open_store(config)
        self.serial = config.get("ET_PTKC_SW_SERIAL")
        pins = PinPolicy(config.get("ET_PTKC_SW_MIN_PIN"), config.get("ET_PTKC_SW_MAX_PIN"),
                         config.get("ET_PTKC_SW_MAX_LOGIN_FAILURES"),
                         config.get("ET_PTKC_SW_PIN_KDF_ITERATIONS"))
        self.handles = Handles()
        user_slots = config.get("ET_PTKC_SW_USER_SLOTS")
        self.tokens = [Token(i, self.store, pins, is_admin=False) for i in range(user_slots)]
        self.tokens.append(Token(user_slots, self.store, pins, is_admin=True,
                                 admin_label=_pad(f"AdminToken({self.serial})", 32)))
        self.session_handles = Handles(1)  # one space for every application: a handle names one session
        self.applications = set()
        self._lock = threading.RLock()
        self._identity = None
        for token in self.tokens:
            token.on_reinitialised = self._token_reinitialised
        self.refresh_settings()

    def refresh_settings(self):
        """Read the adapter object's settings (security flags, firmware version). Done when
        the HSM starts, for each new application and after a change: an application keeps
        the flags it started with (docs/sms.md)."""
        with self._lock:
            self.security_mode, self.firmware = adapter.settings(self.tokens[-1])

    def application(self):
        """A new application: its own sessions, login state and session objects."""
        self.refresh_settings()
        app = Application(self)
        with self._lock:
            self.applications.add(app)
        return app

    @property
    def identity(self):
        """The SMS identity key, loaded when the first channel needs it."""
        if self._identity is None:
            from . import identity
            self._identity = identity.load(self.config.get("ET_PTKC_SW_DATAPATH"))
        return self._identity

    def _token_reinitialised(self, slot_id):
        """Another HSM on the store re-initialised the token: its sessions here end, as
        PKCS#11 has it for a re-initialised token (CKR_SESSION_HANDLE_INVALID after), and
        with them the logins and the old data key."""
        with self._lock:
            for app in list(self.applications):
                app.close_all_sessions(slot_id)

    def sessions_on(self, slot_id):
        """Sessions every application has open on a slot (C_InitToken needs none)."""
        return sum(len(app.slot_sessions[slot_id]) for app in list(self.applications))


class AppToken:
    """A token as one application sees it: its own login state over the shared token.

    `login` is this application's (None, CKU_USER or CKU_SO); the shared Token
    keeps its data key unsealed while any application is logged in. Everything
    else is the token's own.
    """

    def __init__(self, token):
        self.token = token
        self.login = None
        # read on every object lookup or session open: copied, not delegated (they never
        # change), since a delegated name costs a formatted AttributeError before __getattr__
        self.slot_id, self.objects, self.is_admin = token.slot_id, token.objects, token.is_admin
        self.stale, self.ensure_loaded = token.stale, token.ensure_loaded

    @property
    def initialized(self):
        return self.token.initialized

    def __getattr__(self, name):
        return getattr(self.token, name)

    def log_in(self, who, pin):
        if self.login is not None:
            raise CKRError(C.CKR_USER_ALREADY_LOGGED_IN if self.login == who
                           else C.CKR_USER_ANOTHER_ALREADY_LOGGED_IN, "already logged in")
        self.token.log_in(who, pin)
        self.login = who

    def log_out(self):
        if self.login is not None:
            self.token.log_out(self.login)
            self.login = None


class Application:
    """One application (the embedded client, or one network connection): the client
    interface of docs/seams.md over the HSM it belongs to."""

    def __init__(self, hsm):
        self.hsm = hsm
        self.config = hsm.config
        self.serial = hsm.serial
        self.store = hsm.store
        self.handles = hsm.handles
        self.tokens = [AppToken(token) for token in hsm.tokens]
        self.sessions = {}
        self.slot_sessions = [{} for _ in self.tokens]  # slot -> {handle: Session}, the same sessions
        # handle -> Obj, indexed by label and ID like the tokens' tables: ExtToken keeps its loaded
        # objects here, so a find by label must not cost the number of session objects.
        self.session_objects = ObjectTable()
        self._next_session = hsm.session_handles
        self._lock = hsm._lock
        self.no_public_crypto = bool(hsm.security_mode & C.CKF_NO_PUBLIC_CRYPTO)

    # -- slots and tokens ----------------------------------------------------
    def slot_list(self):
        return list(range(len(self.tokens)))

    def _token(self, slot_id):
        if not 0 <= slot_id < len(self.tokens):
            raise CKRError(C.CKR_SLOT_ID_INVALID, f"slot {slot_id}")
        return self.tokens[slot_id]

    def slot_info(self, slot_id):
        token = self._token(slot_id)
        kind = "Admin slot" if token.is_admin else f"user slot {slot_id}"
        return {"description": _pad(f"ptkhsm {kind}", 64), "manufacturer": _pad(MANUFACTURER, 32),
                "flags": C.CKF_TOKEN_PRESENT, "hardware": HARDWARE, "firmware": FIRMWARE}

    def token_info(self, slot_id):
        token = self._token(slot_id)
        with self._lock:
            token.ensure_loaded()
            sessions = self.slot_sessions[slot_id].values()
            return {
                "label": _pad(token.label, 32), "manufacturer": _pad(MANUFACTURER, 32),
                "model": _pad(MODEL, 16), "serial": _pad(self.serial, 16), "flags": token.flags(),
                "max_sessions": C.CK_EFFECTIVELY_INFINITE, "sessions": len(sessions),
                "max_rw_sessions": C.CK_EFFECTIVELY_INFINITE,
                "rw_sessions": sum(1 for s in sessions if s.rw),
                "max_pin": token.pins.max_len, "min_pin": token.pins.min_len,
                "total_public_memory": C.CK_UNAVAILABLE_INFORMATION,
                "free_public_memory": C.CK_UNAVAILABLE_INFORMATION,
                "total_private_memory": C.CK_UNAVAILABLE_INFORMATION,
                "free_private_memory": C.CK_UNAVAILABLE_INFORMATION,
                "hardware": HARDWARE, "firmware": FIRMWARE, "utc_time": b" " * 16}

    def mechanism_list(self, slot_id):
        self._token(slot_id)
        return sorted(REGISTRY)

    def mechanism_info(self, slot_id, ckm):
        self._token(slot_id)
        row = lookup(ckm)
        # CKF_HW: the mechanism runs in the HSM engine, which is this module's device
        # (docs/decisions.md); tools such as pkcs11-tool --test only exercise HW mechanisms.
        return row.min_key, row.max_key, row.flags | C.CKF_HW

    def init_token(self, slot_id, so_pin, label):
        token = self._token(slot_id)
        with self._lock:
            access.check_init_token(self.hsm.sessions_on(slot_id))
            token.init_token(so_pin, token.label if token.is_admin else bytes(label))
            if token.is_admin:  # PTK-C's HSM reset: the security flags go, the firmware stays
                adapter.reset(token, self.hsm.firmware)
                self.hsm.refresh_settings()

    def init_pin(self, handle, pin):
        session, token = self._session(handle)
        access.check_init_pin(session, token)
        token.init_pin(pin)

    def set_pin(self, handle, old_pin, new_pin):
        session, token = self._session(handle)
        access.check_set_pin(session)
        token.set_pin(C.CKU_SO if access.is_so(token) else C.CKU_USER, old_pin, new_pin)

    # -- sessions ------------------------------------------------------------
    def open_session(self, slot_id, flags):
        token = self._token(slot_id)
        if not flags & C.CKF_SERIAL_SESSION:
            raise CKRError(C.CKR_SESSION_PARALLEL_NOT_SUPPORTED, "CKF_SERIAL_SESSION must be set")
        rw = bool(flags & C.CKF_RW_SESSION)
        with self._lock:
            # Objects are refreshed by the calls that use them (find, create, login); opening
            # a session refreshes when a change was notified (no query), so that a session
            # opened after another HSM re-initialised the token is one of the new token.
            if not token.initialized or token.stale():
                token.ensure_loaded()
            access.check_open(token, rw)
            handle = self._next_session.new()
            self.sessions[handle] = self.slot_sessions[slot_id][handle] = Session(handle, slot_id, rw)
            return handle

    def _live(self, handle):
        session = self.sessions.get(handle)
        if session is None:
            raise CKRError(C.CKR_SESSION_HANDLE_INVALID, f"session {handle}")
        return session

    def _session(self, handle):
        session = self._live(handle)
        return session, self.tokens[session.slot_id]

    def _refresh(self, session, token):
        """token.ensure_loaded() for a call on `session`, which fails if the refresh ended
        the session (the token was re-initialised by another HSM of the store)."""
        token.ensure_loaded()
        if self.sessions.get(session.handle) is not session:
            raise CKRError(C.CKR_SESSION_CLOSED, f"session {session.handle} ended: token re-initialised")

    def close_session(self, handle):
        with self._lock:
            session, token = self._session(handle)
            del self.sessions[handle]
            open_here = self.slot_sessions[session.slot_id]
            del open_here[handle]
            for obj_handle in session.objects:
                del self.session_objects[obj_handle]
            if not open_here:
                token.log_out()

    def close_all_sessions(self, slot_id):
        self._token(slot_id)
        with self._lock:
            for handle in list(self.slot_sessions[slot_id]):
                self.close_session(handle)

    def finalize(self):
        """End this application: its sessions, operations, logins and session objects."""
        with self._lock:
            for slot_id in self.slot_list():
                self.close_all_sessions(slot_id)
            self.hsm.applications.discard(self)

    close_everything = finalize  # the name the first client layers were written against

    def session_info(self, handle):
        session, token = self._session(handle)
        flags = C.CKF_SERIAL_SESSION | (C.CKF_RW_SESSION if session.rw else 0)
        return session.slot_id, access.session_state(session, token), flags

    def login(self, handle, user_type, pin):
        session, token = self._session(handle)
        if user_type == C.CKU_CONTEXT_SPECIFIC:
            return self._context_login(session, token, pin)
        if user_type not in (C.CKU_SO, C.CKU_USER):
            raise CKRError(C.CKR_USER_TYPE_INVALID, f"user type {user_type}")
        with self._lock:
            if user_type == C.CKU_SO and token.login is None:
                access.check_so_login(self.slot_sessions[session.slot_id].values())
            self._refresh(session, token)
            token.log_in(user_type, pin)

    def _context_login(self, session, token, pin):
        access.check_context_login(token)
        pending = [s for s in session.ops.values() if s.needs_context_login]
        if not pending:
            raise CKRError(C.CKR_OPERATION_NOT_INITIALIZED, "no operation needs re-authentication")
        token.check_pin(pin)
        for state in pending:
            state.needs_context_login = False

    def cancel(self, handle, flags):
        session = self._live(handle)
        for flag, kind in ((C.CKF_ENCRYPT, ENCRYPT), (C.CKF_DECRYPT, DECRYPT), (C.CKF_DIGEST, DIGEST),
                           (C.CKF_SIGN, SIGN), (C.CKF_VERIFY, VERIFY), (C.CKF_FIND_OBJECTS, FIND)):
            if flags & flag:
                session.end(kind)

    def logout(self, handle):
        _, token = self._session(handle)
        with self._lock:
            access.check_logout(token)
            token.log_out()

    # -- objects -------------------------------------------------------------
    def _object(self, token, handle, error=C.CKR_OBJECT_HANDLE_INVALID):
        obj = self.session_objects.get(handle) or token.objects.get(handle)
        if obj is None and handle < SESSION_HANDLES:
            # a token object's handle is its store row: another process (a server of the
            # same store) may have made it since this one last looked
            with self._lock:
                token.ensure_loaded()
            obj = token.objects.get(handle)
        if obj is None or obj.slot != token.slot_id or not access.can_see(token, obj):
            raise CKRError(error, f"object {handle}")
        return obj

    def _key(self, token, handle):
        return self._object(token, handle, C.CKR_KEY_HANDLE_INVALID)

    def _add_objects(self, session, token, attrs_list):
        """Store new objects (token ones durably, all in one transaction) -> handles. attrs_list:
        dicts made for this call (new_object's, a copy's), which become the objects'."""
        attrs_list = [policy.with_identity(attrs) for attrs in attrs_list]
        for attrs in attrs_list:
            access.check_write(session, token, attrs[C.CKA_TOKEN], attrs[C.CKA_PRIVATE])
            policy.check_so_only(attrs, access.is_so(token))
        with self._lock:
            if self.sessions.get(session.handle) is not session:  # closed by another thread meanwhile
                raise CKRError(C.CKR_SESSION_CLOSED, f"session {session.handle} closed during the call")
            persistent = [a for a in attrs_list if a[C.CKA_TOKEN]]
            # Token objects go to the store: read it first (another HSM may have re-initialised
            # the token). Session objects stay here, as an operation's state does: asked only
            # after a notified change (no query; ExtToken's loaded copies are such objects).
            if persistent or token.stale():
                self._refresh(session, token)
            stored = iter(token.store_new(persistent)) if persistent else iter(())
            handles = []
            for attrs in attrs_list:
                if attrs[C.CKA_TOKEN]:
                    obj = next(stored)
                else:
                    obj = Obj(self.handles.new(), attrs, token.slot_id, session=session.handle)
                    self.session_objects[obj.handle] = obj
                    session.objects.add(obj.handle)
                handles.append(obj.handle)
            return handles

    def create_object(self, handle, template):
        session, token = self._session(handle)
        attrs = policy.new_object(policy.as_dict(template), policy.CREATE)
        return self._add_objects(session, token, [attrs])[0]

    def copy_object(self, handle, obj_handle, template):
        session, token = self._session(handle)
        obj = self._object(token, obj_handle)
        if not obj.attrs.get(C.CKA_COPYABLE, True):
            raise CKRError(C.CKR_ACTION_PROHIBITED, "object is not copyable")
        if adapter.is_adapter(obj):  # the HSM's settings are one object (stores made before it said so)
            raise CKRError(C.CKR_ACTION_PROHIBITED, "the adapter object is not copyable")
        changes = policy.as_dict(template)
        policy.check_change(obj.attrs, changes, access.is_so(token), copying=True)
        return self._add_objects(session, token, [{**obj.attrs, **changes}])[0]

    def destroy_object(self, handle, obj_handle):
        session, token = self._session(handle)
        with self._lock:
            obj = self._object(token, obj_handle)
            access.check_write(session, token, obj.is_token, obj.is_private)
            if not obj.attrs.get(C.CKA_DESTROYABLE, True):
                raise CKRError(C.CKR_ACTION_PROHIBITED, "object is not destroyable")
            if obj.is_token and obj.attrs.get(C.CKA_DELETABLE) is False:  # PTK-C: until C_InitToken
                raise CKRError(C.CKR_ACTION_PROHIBITED, "token object has CKA_DELETABLE FALSE")
            if obj.is_token:
                token.store_delete(obj)
            else:
                del self.session_objects[obj.handle]
                self.sessions[obj.session].objects.discard(obj.handle)

    def object_size(self, handle, obj_handle):
        _, token = self._session(handle)
        obj = self._object(token, obj_handle)
        return sum(len(v) if isinstance(v, bytes) else 8 for v in obj.attrs.values())

    def get_attributes(self, handle, obj_handle, types):
        """-> list of values, or CKRError instances for attributes that cannot be given."""
        _, token = self._session(handle)
        return policy.visible_values(self._object(token, obj_handle).attrs, types)

    def set_attributes(self, handle, obj_handle, template):
        session, token = self._session(handle)
        with self._lock:
            obj = self._object(token, obj_handle)
            access.check_write(session, token, obj.is_token, obj.is_private)
            changes = policy.as_dict(template)
            if adapter.is_adapter(obj):  # the HSM's own settings: the Admin SO only
                adapter.change(token, obj, changes, token.is_admin and access.is_so(token))
                self.hsm.refresh_settings()
                return
            policy.check_change(obj.attrs, changes, access.is_so(token))
            attrs = {**obj.attrs, **changes}
            if obj.is_token:
                token.store_update(obj, attrs)
            else:
                obj.replace_attrs(attrs)

    def find_init(self, handle, template):
        session, token = self._session(handle)
        session.idle(FIND)
        session.begin(FIND, iter(self._matching(session, token, tuple(template))))

    def find_all(self, handle, template):
        """Every handle C_FindObjectsInit would find, at once (calls.py: no C function's),
        leaving the session's own find, if one is active, as it was."""
        session, token = self._session(handle)
        return self._matching(session, token, tuple(template))

    def _matching(self, session, token, template):
        with self._lock:
            self._refresh(session, token)
            candidates = token.objects.candidates(template) + [
                o for o in self.session_objects.candidates(template) if o.slot == token.slot_id]
            return [o.handle for o in candidates if access.can_see(token, o) and matches(o.attrs, template)]

    def find(self, handle, max_count):
        session = self._live(handle)
        state = session.active(FIND)
        out = []
        for obj_handle in state.op:
            out.append(obj_handle)
            if len(out) >= max_count:
                break
        return out

    def find_final(self, handle):
        session = self._live(handle)
        session.active(FIND)
        session.end(FIND)

    # -- cryptographic operations -------------------------------------------
    def _begin(self, handle, kind, mechanism, key_handle):
        session = self._live(handle)
        if self.no_public_crypto:
            self._check_crypto_login(session)
        session.idle(kind)
        token = self.tokens[session.slot_id]
        if token.stale():  # a key of a token re-initialised elsewhere is gone, and its session
            with self._lock:
                self._refresh(session, token)
        key = None if key_handle is None else self._key(token, key_handle)
        op = operations.start(kind, mechanism, key)
        session.begin(kind, op, key)

    def _check_crypto_login(self, session):
        """The No public crypto flag: cryptographic operations need a logged-in user."""
        if self.tokens[session.slot_id].login is None:
            raise CKRError(C.CKR_USER_NOT_LOGGED_IN, "this HSM allows no public crypto (security flag "
                                                     "No public crypto): log in first")

    def _resolver(self, token):
        return lambda obj_handle: self._key(token, obj_handle)

    def encrypt_init(self, handle, mechanism, key):
        self._begin(handle, ENCRYPT, mechanism, key)

    def encrypt(self, handle, data, out_len):
        return self._live(handle).produce(ENCRYPT, ONESHOT, data, out_len)

    def encrypt_update(self, handle, data, out_len):
        return self._live(handle).produce(ENCRYPT, UPDATE, data, out_len)

    def encrypt_final(self, handle, out_len):
        return self._live(handle).produce(ENCRYPT, FINAL, None, out_len)

    def decrypt_init(self, handle, mechanism, key):
        self._begin(handle, DECRYPT, mechanism, key)

    def decrypt(self, handle, data, out_len):
        return self._live(handle).produce(DECRYPT, ONESHOT, data, out_len)

    def decrypt_update(self, handle, data, out_len):
        return self._live(handle).produce(DECRYPT, UPDATE, data, out_len)

    def decrypt_final(self, handle, out_len):
        return self._live(handle).produce(DECRYPT, FINAL, None, out_len)

    def digest_init(self, handle, mechanism):
        self._begin(handle, DIGEST, mechanism, None)

    def digest(self, handle, data, out_len):
        return self._live(handle).produce(DIGEST, ONESHOT, data, out_len)

    def digest_update(self, handle, data):
        self._live(handle).consume(DIGEST, UPDATE, data)

    def digest_key(self, handle, key_handle):
        session, token = self._session(handle)
        with session.ends_on_failure(DIGEST):
            key = self._key(token, key_handle)
            if key.attrs[C.CKA_CLASS] != C.CKO_SECRET_KEY:
                raise CKRError(C.CKR_KEY_INDIGESTIBLE, "only secret keys can be digested")
        session.consume(DIGEST, UPDATE, key.attrs[C.CKA_VALUE])

    def digest_final(self, handle, out_len):
        return self._live(handle).produce(DIGEST, FINAL, None, out_len)

    def sign_init(self, handle, mechanism, key):
        self._begin(handle, SIGN, mechanism, key)

    def sign(self, handle, data, out_len):
        return self._live(handle).produce(SIGN, ONESHOT, data, out_len)

    def sign_update(self, handle, data):
        self._live(handle).consume(SIGN, UPDATE, data)

    def sign_final(self, handle, out_len):
        return self._live(handle).produce(SIGN, FINAL, None, out_len)

    def verify_init(self, handle, mechanism, key):
        self._begin(handle, VERIFY, mechanism, key)

    def verify(self, handle, data, signature):
        self._live(handle).consume(VERIFY, ONESHOT, data, signature)

    def verify_update(self, handle, data):
        self._live(handle).consume(VERIFY, UPDATE, data)

    def verify_final(self, handle, signature):
        self._live(handle).consume(VERIFY, FINAL, signature)

    # -- keys ----------------------------------------------------------------
    def generate_key(self, handle, mechanism, template):
        session, token = self._session(handle)
        if self.no_public_crypto:
            self._check_crypto_login(session)
        template = policy.as_dict(template)
        cls, ckk, material = operations.generate(mechanism, template)
        attrs = policy.new_object(template, policy.GENERATE, cls, ckk, mechanism.type, extra=material)
        return self._add_objects(session, token, [attrs])[0]

    def generate_key_pair(self, handle, mechanism, public_template, private_template):
        session, token = self._session(handle)
        if self.no_public_crypto:
            self._check_crypto_login(session)
        public_template = policy.as_dict(public_template)
        private_template = policy.as_dict(private_template)
        gate.let_others_in()  # RSA, DSA and DH pairs take milliseconds outside the GIL
        ckk, public_material, private_material = operations.generate_pair(
            mechanism, public_template, private_template)
        public = policy.new_object(public_template, policy.GENERATE, C.CKO_PUBLIC_KEY, ckk,
                                   mechanism.type, extra=public_material)
        private = policy.new_object(private_template, policy.GENERATE, C.CKO_PRIVATE_KEY, ckk,
                                    mechanism.type, extra=private_material)
        return tuple(self._add_objects(session, token, [public, private]))

    def wrap_key(self, handle, mechanism, wrapping_handle, key_handle):
        session, token = self._session(handle)
        if self.no_public_crypto:
            self._check_crypto_login(session)
        wrapping_key = self._object(token, wrapping_handle, C.CKR_WRAPPING_KEY_HANDLE_INVALID)
        key = self._object(token, key_handle, C.CKR_KEY_HANDLE_INVALID)
        return operations.wrap(mechanism, wrapping_key, key)

    def unwrap_key(self, handle, mechanism, unwrapping_handle, wrapped, template):
        session, token = self._session(handle)
        if self.no_public_crypto:
            self._check_crypto_login(session)
        unwrapping_key = self._object(token, unwrapping_handle, C.CKR_UNWRAPPING_KEY_HANDLE_INVALID)
        template = policy.as_dict(template)
        origin, cls, ckk, material = operations.unwrap(mechanism, unwrapping_key, wrapped, template)
        attrs = policy.new_object(template, origin, cls, ckk, extra=material)
        return self._add_objects(session, token, [attrs])[0]

    def derive_key(self, handle, mechanism, base_handle, template):
        session, token = self._session(handle)
        if self.no_public_crypto:
            self._check_crypto_login(session)
        base = self._key(token, base_handle)
        template = policy.as_dict(template)
        cls, ckk, material = operations.derive(mechanism, base, template, self._resolver(token))
        attrs = policy.new_object(template, policy.DERIVE, cls, ckk, base=base, extra=material)
        return self._add_objects(session, token, [attrs])[0]

    # -- random --------------------------------------------------------------
    def seed_random(self, handle, seed):
        """Mix the seed into the kernel's pool, which os.urandom draws from (no entropy
        is credited, so a bad seed cannot weaken it)."""
        self._live(handle)
        try:
            with open("/dev/urandom", "wb") as pool:
                pool.write(seed)
        except OSError as exc:
            raise CKRError(C.CKR_RANDOM_SEED_NOT_SUPPORTED, f"cannot seed: {exc.strerror}") from None

    def generate_random(self, handle, length):
        self._live(handle)
        return os.urandom(length)
