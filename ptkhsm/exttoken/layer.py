"""The ExtToken layer: slot 0's token objects live on the host, wrapped under
master keys that never leave the HSM (docs/exttoken.md).

It takes the client interface below it (docs/seams.md) and implements the
same one. Calls on other slots, session objects and the HSM's own token
objects of slot 0 pass straight through; what it owns is the objects an
application makes on slot 0 with CKA_TOKEN=TRUE ("external objects"):

- made in the HSM as session objects (a short-lived session of the layer's
  own), wrapped with CKM_WRAPKEY_DES3_CBC (or _AES_KWP) under the public or
  private master key, appended to the ODS; the application gets a virtual
  handle, BASE + the object's id, the same in every session and process;
- unwrapped into the HSM as a session object of the layer's loader session
  when first used, and kept in an LRU cache of ET_PTKC_EXTTOKEN_MAXLOADED
  objects (an OrderedDict: O(1) per use whatever its size);
- found from the index on the fast-find attributes without unwrapping.

Only the lower api's public methods are used, so the layer works unchanged
over the network transport.
"""

import fcntl
import itertools
import os
import secrets
import threading
from collections import OrderedDict
from contextlib import contextmanager

from .. import constants as C
from .. import mechparams as P
from .. import schema
from ..calls import LAYER_HANDLES
from ..errors import CKRError
from ..log import logger
from .files import FAST, KIND_NAMES, PRIVATE, PUBLIC, Files

SLOT = 0
BASE = LAYER_HANDLES       # virtual handles: BASE + object id (the HSM's stay below)
LABEL = b"ExtToken"
VALUE_PREFIX = b"file:"
RW = C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION
# Master key types -> the whole-object wrapping mechanism used with them.
WRAPKEY = {C.CKK_DES2: C.CKM_WRAPKEY_DES3_CBC, C.CKK_AES: C.CKM_WRAPKEY_AES_KWP}
MASTER_KEYS = {  # ET_PTKC_EXTTOKEN_MASTERKEY -> (key generation mechanism, extra template)
    "DES2": (C.CKM_DES2_KEY_GEN, ((C.CKA_KEY_TYPE, C.CKK_DES2),)),
    "AES256": (C.CKM_AES_KEY_GEN, ((C.CKA_KEY_TYPE, C.CKK_AES), (C.CKA_VALUE_LEN, 32))),
}
# Values an external object cannot have, and why (the seed's rules, and ours).
REFUSED = {
    C.CKA_EXPORT: (True, "external objects cannot export other keys"),
    C.CKA_TRUSTED: (True, "external objects cannot be trusted"),
    C.CKA_WRAP_WITH_TRUSTED: (True, "the master keys are not trusted keys"),
    C.CKA_DESTROYABLE: (False, "the files are on the host: a non-destroyable object cannot be promised"),
    C.CKA_DELETABLE: (False, "the files are on the host: a non-deletable object cannot be promised"),
}
# New keys are made extractable whatever the template says (the seed: ExtToken "transparently
# sets CKA_EXTRACTABLE to TRUE"; pkcs11-tool always asks FALSE); an existing key brought in
# (C_CopyObject, a CKM_WRAPKEY_* cryptogram restored) must already be extractable.
UNEXTRACTABLE = "ExtToken wraps its objects: only extractable keys can be stored on slot 0"
# ... and the code for it: CKR_KEY_UNEXTRACTABLE is in no list of the functions that bring a key
# in; C_CopyObject's has CKR_ACTION_PROHIBITED, C_UnwrapKey's CKR_ATTRIBUTE_VALUE_INVALID (the
# cryptogram's CKA_EXTRACTABLE FALSE, as in C_SetAttributeValue).
UNEXTRACTABLE_RV = {"copy": C.CKR_ACTION_PROHIBITED, "unwrap": C.CKR_ATTRIBUTE_VALUE_INVALID}
_KEEP_SECRET = (C.CKO_SECRET_KEY, C.CKO_PRIVATE_KEY)
_PARAMETER_GEN = {C.CKM_DSA_PARAMETER_GEN, C.CKM_DH_PKCS_PARAMETER_GEN, C.CKM_X9_42_DH_PARAMETER_GEN,
                  C.CKM_DSA_PROBABILISTIC_PARAMETER_GEN, C.CKM_DSA_SHAWE_TAYLOR_PARAMETER_GEN}
_RESTORING = (C.CKM_WRAPKEY_DES3_CBC, C.CKM_WRAPKEY_AES_KWP)
_LOADED_COPY = ((C.CKA_TOKEN, False),)     # the unwrap template of a load: a session object
_MISSING = object()
# The layer's own work for a call (finding the external token, loading an object) answers the
# application only with codes every function may return, or the call's own "bad handle" code;
# anything else (an unwrap's CKR_UNWRAPPING_KEY_HANDLE_INVALID, the files' CKR_TOKEN_NOT_RECOGNIZED,
# an OSError) is no answer to C_GetAttributeValue or C_FindObjectsInit: it is logged with its reason
# and answered CKR_DEVICE_ERROR (PKCS#11 v2.40 §5.1's lists; the ABI fuzzer checks them).
_PASSED = frozenset({C.CKR_DEVICE_ERROR, C.CKR_DEVICE_MEMORY, C.CKR_HOST_MEMORY, C.CKR_SESSION_HANDLE_INVALID,
                     C.CKR_SESSION_CLOSED, C.CKR_CRYPTOKI_NOT_INITIALIZED})
_QUIET = frozenset({C.CKR_SESSION_HANDLE_INVALID, C.CKR_SESSION_CLOSED, C.CKR_CRYPTOKI_NOT_INITIALIZED})
# What the HSM answers for a handle it does not know (a loaded copy it lost: fail-over, restart).
_GONE = frozenset({C.CKR_OBJECT_HANDLE_INVALID, C.CKR_KEY_HANDLE_INVALID, C.CKR_WRAPPING_KEY_HANDLE_INVALID,
                   C.CKR_UNWRAPPING_KEY_HANDLE_INVALID})
# What the HSM answers for the loader session when it lost it (a restart), or when the server
# that held it is gone (a fail-over without HA mode): a new loader, nothing loaded.
_LOADER_LOST = frozenset({C.CKR_SESSION_HANDLE_INVALID, C.CKR_SESSION_CLOSED, C.CKR_DEVICE_REMOVED})


def _edge(exc, what, error=None):
    """A failure of the layer's own work -> what the application gets: the call's own "bad
    handle" code, a code of _PASSED, or CKR_DEVICE_ERROR; logged unless it is the application's."""
    if isinstance(exc, CKRError) and (exc.rv == error or exc.rv in _QUIET):
        return exc
    logger.error("ExtToken: %s: %s", what, exc)    # a failure of the module: shown by default
    if isinstance(exc, CKRError) and exc.rv in _PASSED:
        return exc
    return CKRError(C.CKR_DEVICE_ERROR, f"ExtToken: {what}: {exc}")


@contextmanager
def _own_work(what, error=None):
    try:
        yield
    except (CKRError, OSError) as exc:
        raise _edge(exc, what, error) from None


class _Token:
    """What the layer knows of slot 0's external token once it has found it."""

    def __init__(self, files, data_object):
        self.files = files
        self.data_object = data_object
        self.masters = {PUBLIC: None, PRIVATE: None}   # kind -> HSM handle
        self.mechanisms = {}                                  # kind -> Mechanism(CKM_WRAPKEY_*)


def _refuse(template):
    for attr_type, value in template:
        refused = REFUSED.get(attr_type)
        if refused is not None and bool(value) == refused[0]:
            raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID,
                           f"{schema.name(attr_type)}={refused[0]} on slot 0's external token: {refused[1]}")


class ExtToken:
    def __init__(self, lower, config):
        self.lower = lower
        self.directory = config.get("ET_PTKC_EXTTOKEN_PATH") or os.path.join(
            config.get("ET_PTKC_SW_DATAPATH"), "exttoken")
        self.max_loaded = config.get("ET_PTKC_EXTTOKEN_MAXLOADED")
        self.master_kind = config.get("ET_PTKC_EXTTOKEN_MASTERKEY")
        self._lock = threading.RLock()
        self._sessions = set()        # the application's sessions on the external token
        self._finds = {}              # slot-0 session -> iterator over the handles found
        self._loader = None           # the layer's own session on slot 0 (while the app has one)
        self._user = False            # the user is logged in on slot 0
        self._token = None
        self._cache = OrderedDict()   # object id -> (record offset, HSM handle), least used first
        self._loaded = {}             # HSM handle -> object id

    def __getattr__(self, name):
        # Everything that never names a slot-0 object (slot and mechanism info, PINs,
        # data steps of operations, random numbers) is the lower api's; kept, so that the
        # next call finds it without coming here (C_Sign after C_SignInit, each time).
        method = getattr(self.lower, name)
        setattr(self, name, method)
        return method

    def _ext(self, session):
        return session in self._sessions

    # -- slots, tokens, sessions, login --------------------------------------------
    def token_info(self, slot_id):
        info = self.lower.token_info(slot_id)
        if slot_id == SLOT and self._loader is not None:   # the loader is ours, not the app's
            info = dict(info, sessions=info["sessions"] - 1, rw_sessions=info["rw_sessions"] - 1)
        return info

    def init_token(self, slot_id, so_pin, label):
        self.lower.init_token(slot_id, so_pin, label)
        if slot_id == SLOT:
            with self._lock:
                self._forget_token()

    # Sessions of other slots are the lower api's alone: not even counted here.
    def open_session(self, slot_id, flags):
        handle = self.lower.open_session(slot_id, flags)
        if slot_id != SLOT:
            return handle
        with self._lock:
            if self._loader is None:
                try:
                    self._loader = self.lower.open_session(SLOT, RW)
                except CKRError as exc:
                    if exc.rv == C.CKR_TOKEN_WRITE_PROTECTED:
                        # An uninitialised token opens read-only sessions only: it is no external
                        # token yet, its sessions pass through (p11-kit lists it so).
                        return handle
                    self.lower.close_session(handle)
                    raise
            self._sessions.add(handle)
        return handle

    def close_session(self, handle):
        if handle not in self._sessions:
            return self.lower.close_session(handle)
        with self._lock:
            if len(self._sessions) == 1:
                self._close_loader()       # before the app's last one, so the HSM logs out as usual
            self.lower.close_session(handle)
            self._sessions.discard(handle)
            self._finds.pop(handle, None)
            if not self._sessions:
                self._user = False

    def close_all_sessions(self, slot_id):
        if slot_id != SLOT:
            return self.lower.close_all_sessions(slot_id)
        with self._lock:
            self._close_loader()
            self.lower.close_all_sessions(slot_id)
            self._sessions.clear()
            self._finds.clear()
            self._user = False

    def close_everything(self):
        with self._lock:
            self._close_loader()
            self.lower.close_everything()
            self._drop_state()

    def finalize(self):
        """The end of the application (docs/seams.md): ours goes with it."""
        with self._lock:
            self._close_loader()
            self._drop_state()
        return self.lower.finalize()

    def _drop_state(self):
        self._sessions.clear()
        self._finds.clear()
        self._user = False
        self._forget_token()

    def _close_loader(self):
        if self._loader is not None:
            loader, self._loader = self._loader, None
            try:
                self.lower.close_session(loader)    # its session objects, the loaded copies, go with it
            except CKRError:
                pass
        self._cache.clear()
        self._loaded.clear()

    def _forget_token(self):
        if self._token is not None:
            self._token.files.close()
        self._token = None
        for oid in list(self._cache):
            self._unload(oid)

    def login(self, handle, user_type, pin):
        if not self._ext(handle) or user_type not in (C.CKU_USER, C.CKU_SO):
            return self.lower.login(handle, user_type, pin)
        with self._lock:    # with C_Logout in another thread, _user must end as the HSM's state
            self.lower.login(handle, user_type, pin)
            self._user = user_type == C.CKU_USER
            if self._user:
                try:   # the private master key is made once the user is there
                    self._master(PRIVATE)
                except (CKRError, OSError) as exc:
                    logger.warning("ExtToken: private master key not available: %s", exc)

    def logout(self, handle):
        if not self._ext(handle):
            return self.lower.logout(handle)
        with self._lock:
            # Unload private objects while they can still be destroyed.
            for oid in [o for o in self._cache if self._is_private(o)]:
                self._unload(oid)
            self.lower.logout(handle)
            self._user = False

    def _is_private(self, oid):
        entry = self._token.files.index.get(oid) if self._token else None
        return entry is None or entry.kind == PRIVATE

    # -- the external token: data object, master keys, files -------------------------
    def _find_lower(self, session, template):
        return [h for h in self.lower.find_all(session, template) if h not in self._loaded]

    def _setup_lock(self):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.directory, "setup.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)   # two processes must not both create the objects
        return fd

    def _setup(self):
        """The external token of slot 0, its objects created when missing."""
        if self._token is not None:
            return self._token
        if self._loader is None:
            raise CKRError(C.CKR_SESSION_HANDLE_INVALID, "no session on slot 0")
        lock = self._setup_lock()
        try:
            found = self._find_lower(self._loader, [(C.CKA_CLASS, C.CKO_DATA), (C.CKA_TOKEN, True),
                                                     (C.CKA_LABEL, LABEL)])
            if found:
                value = self.lower.get_attributes(self._loader, found[0], [C.CKA_VALUE])[0]
                if isinstance(value, CKRError) or not value.startswith(VALUE_PREFIX) or \
                        not value[len(VALUE_PREFIX):].isalnum():
                    raise CKRError(C.CKR_DEVICE_ERROR, "slot 0's ExtToken data object has no valid file:<name>")
                name, data = value[len(VALUE_PREFIX):].decode(), found[0]
            else:
                name = "et" + secrets.token_hex(8)
                data = self.lower.create_object(self._loader, [
                    (C.CKA_CLASS, C.CKO_DATA), (C.CKA_TOKEN, True), (C.CKA_PRIVATE, False),
                    (C.CKA_LABEL, LABEL), (C.CKA_APPLICATION, LABEL),
                    (C.CKA_VALUE, VALUE_PREFIX + name.encode())])
            self._token = _Token(Files(self.directory, name), data)
            self._token.masters[PUBLIC] = self._find_or_make_master(PUBLIC)
        except BaseException:
            self._token = None
            raise
        finally:
            os.close(lock)
        return self._token

    def _find_or_make_master(self, kind, make=True):
        template = [(C.CKA_CLASS, C.CKO_SECRET_KEY), (C.CKA_TOKEN, True), (C.CKA_LABEL, LABEL),
                    (C.CKA_PRIVATE, kind == PRIVATE)]
        found = self._find_lower(self._loader, template)
        if not found and not make:
            raise CKRError(C.CKR_DEVICE_ERROR, f"slot 0's {KIND_NAMES[kind]} ExtToken master key is missing")
        if not found:
            mechanism, extra = MASTER_KEYS[self.master_kind]
            found = [self.lower.generate_key(self._loader, P.Mechanism(mechanism), template + list(extra) + [
                (C.CKA_WRAP, True), (C.CKA_UNWRAP, True), (C.CKA_ENCRYPT, False), (C.CKA_DECRYPT, False),
                (C.CKA_SIGN, False), (C.CKA_VERIFY, False), (C.CKA_DERIVE, False),
                (C.CKA_SENSITIVE, True), (C.CKA_EXTRACTABLE, True), (C.CKA_MODIFIABLE, False)])]
        token = self._token
        for handle in found:   # several (two processes racing before the lock existed): the files decide
            ckk, kvc = self.lower.get_attributes(self._loader, handle, [C.CKA_KEY_TYPE, C.CKA_CHECK_VALUE])
            if ckk not in WRAPKEY or isinstance(kvc, CKRError):
                continue
            if token.files.kvc(kind) in (None, kvc) or handle == found[-1]:
                token.mechanisms[kind] = P.Mechanism(token.files.ensure_log(kind, WRAPKEY[ckk], kvc))
                return handle
        raise CKRError(C.CKR_DEVICE_ERROR, "slot 0's ExtToken master key is not a DES2 or AES key")

    def _master(self, kind):
        token = self._setup()
        if token.masters[kind] is None:
            if kind == PRIVATE and not self._user:
                raise CKRError(C.CKR_USER_NOT_LOGGED_IN, "private objects need the user logged in")
            lock = self._setup_lock()
            try:
                token.masters[kind] = self._find_or_make_master(kind)
            finally:
                os.close(lock)
        return token.masters[kind]

    # -- external objects: handles, loading, the cache ---------------------------------
    def _entry(self, handle, error=C.CKR_OBJECT_HANDLE_INVALID):
        token = self._token
        if token is None:
            with _own_work("the external token's files", error):
                token = self._setup()
        try:
            entry = token.files.entry(handle - BASE)
        except (CKRError, OSError) as exc:
            raise _edge(exc, "the external token's files", error) from None
        if entry is None or (entry.kind == PRIVATE and not self._user):
            raise CKRError(error, f"object {handle}")
        return entry

    def _resolve(self, session, handle, error=C.CKR_OBJECT_HANDLE_INVALID, hits=None):
        """A handle the application gave -> the HSM's handle (loading an external object).
        An HSM handle is its own, except those an application cannot name on slot 0: the
        loaded copies (its handle is the virtual one) and the external token's own objects
        (no sweep or stray handle may destroy the master keys).
        hits: collects the ids of the objects that were already loaded (see _with_loaded)."""
        if session not in self._sessions:
            return handle
        if handle < BASE:
            token = self._token
            if handle in self._loaded or (token is not None and (
                    handle == token.data_object or handle in token.masters.values())):
                raise CKRError(error, f"object {handle}")
            return handle
        return self._load(self._entry(handle, error), error, hits)

    def _mechanism(self, session, mechanism, hits=None):
        if mechanism.type in P.KEY_HANDLE_MECHANISMS and isinstance(mechanism.param, int):
            return mechanism._replace(param=self._resolve(session, mechanism.param, C.CKR_KEY_HANDLE_INVALID, hits))
        return mechanism

    def _with_loaded(self, session, call, refs, mechanism=None, probe=False):
        """call([mechanism,] *HSM handles) for the application's [(handle, its error code)].

        A loaded copy the HSM has lost (fail-over to another server, HA replay, a restart: session
        objects do not survive them) answers "handle invalid": its cache entry is dropped, the
        object loaded again and the call retried, once. probe: check the cached copies before the
        call instead (for a call whose failure ends an operation, C_DigestKey)."""
        for retry in (False, True):
            hits = []
            args = [self._resolve(session, handle, error, hits) for handle, error in refs]
            if mechanism is not None:
                args.insert(0, self._mechanism(session, mechanism, hits))
            if probe and not retry and self._drop_stale(hits):
                continue
            try:
                return call(*args)
            except CKRError as exc:
                if retry or probe or exc.rv not in _GONE or not self._drop_stale(hits):
                    raise

    def _drop_stale(self, oids):
        """Unload the cached copies the HSM no longer has -> whether there was one."""
        stale = False
        for oid in oids:
            cached = self._cache.get(oid)
            if cached is None:
                continue
            try:
                self.lower.get_attributes(self._loader, cached[1], [C.CKA_CLASS])
            except CKRError as exc:
                if exc.rv in _LOADER_LOST:
                    self._reopen_loader()
                    return True
                if exc.rv not in _GONE:
                    continue
                logger.info("ExtToken: the HSM lost object %d's loaded copy; loading it again", oid)
                self._unload(oid)
                stale = True
        return stale

    def _reopen_loader(self):
        """The HSM lost the loader session itself (a server restart, a fail-over): a new one,
        nothing loaded."""
        logger.info("ExtToken: the HSM lost the loader session; opening another")
        self._cache.clear()
        self._loaded.clear()
        self._loader = self.lower.open_session(SLOT, RW)

    def _load(self, entry, error=C.CKR_OBJECT_HANDLE_INVALID, hits=None):
        cached = self._cache.get(entry.oid)
        if cached is not None:
            if cached[0] == entry.offset:
                self._cache.move_to_end(entry.oid)
                if hits is not None:
                    hits.append(entry.oid)
                return cached[1]
            self._unload(entry.oid)            # rewritten since (by us or another process)
        if entry.damaged:
            raise CKRError(C.CKR_DEVICE_ERROR, f"ExtToken object {entry.oid}: its record is damaged; not loaded")
        try:    # _own_work's rule, without its context manager and message on every load
            handle = self._unwrap(entry, error)
        except (CKRError, OSError) as exc:
            raise _edge(exc, f"object {entry.oid} not loaded", error) from None
        self._cache[entry.oid] = (entry.offset, handle)
        self._loaded[handle] = entry.oid
        while len(self._cache) > self.max_loaded:
            self._unload(next(iter(self._cache)))
        return handle

    def _unwrap(self, entry, error):
        """The cryptogram of an entry unwrapped into the HSM (loader session) -> HSM handle."""
        token = self._setup()
        cryptogram = token.files.cryptogram(entry)
        for retry in (False, True):
            try:
                return self.lower.unwrap_key(self._loader, token.mechanisms[entry.kind], self._master(entry.kind),
                                             cryptogram, _LOADED_COPY)
            except CKRError as exc:
                if exc.rv in (C.CKR_SIGNATURE_INVALID, C.CKR_WRAPPED_KEY_INVALID):
                    logger.error("ExtToken: object %d in %s does not verify (tampered or damaged); not loaded",
                                 entry.oid, token.files.logs[entry.kind].path)
                    raise CKRError(C.CKR_DEVICE_ERROR,
                                   f"ExtToken object {entry.oid}: its cryptogram does not verify; not loaded") from None
                if retry:
                    raise
                if exc.rv == C.CKR_UNWRAPPING_KEY_HANDLE_INVALID:
                    # The master key is out of sight: the user was logged out underneath (then the
                    # object is invisible too), or the HSM's handle changed: find it again.
                    token.masters[entry.kind] = None
                    if entry.kind == PRIVATE and not self._logged_in():
                        self._user = False
                        raise CKRError(error, f"ExtToken object {entry.oid}: the user is not logged in") from None
                    # found again, never made anew: a new key could not read the files
                    token.masters[entry.kind] = self._find_or_make_master(entry.kind, make=False)
                elif exc.rv in _LOADER_LOST:
                    self._reopen_loader()
                else:
                    raise

    def _logged_in(self):
        state = self.lower.session_info(self._loader)[1]
        return state in (C.CKS_RO_USER_FUNCTIONS, C.CKS_RW_USER_FUNCTIONS)

    def _unload(self, oid):
        cached = self._cache.pop(oid, None)
        if cached is None:
            return
        handle = cached[1]
        del self._loaded[handle]
        if self._loader is not None:
            try:
                self.lower.destroy_object(self._loader, handle)
            except CKRError:
                pass

    # -- for ctkmu, the ExtToken tool ---------------------------------------------------
    def loaded_count(self):
        return len(self._cache)

    def external_files(self):
        """The Files of slot 0's external token (needs a session on slot 0)."""
        with self._lock:
            return self._setup().files

    def internal_objects(self):
        """-> {"data": handle, "public": handle, "private": handle or None} (HSM objects)."""
        with self._lock:
            token = self._setup()
            if self._user:
                self._master(PRIVATE)
            return {"data": token.data_object, "public": token.masters[PUBLIC],
                    "private": token.masters[PRIVATE]}

    def forget(self):
        """Drop what is known of the external token (ctkmu replaced its objects or files)."""
        with self._lock:
            self._forget_token()

    # -- making external objects -----------------------------------------------------
    def _check_rw(self, session):
        if not self.lower.session_info(session)[2] & C.CKF_RW_SESSION:
            raise CKRError(C.CKR_SESSION_READ_ONLY, "token objects need a read/write session")

    @staticmethod
    def _as_session_template(template, cls):
        _refuse(template)
        out = [(t, v) for t, v in template if t != C.CKA_TOKEN] + [(C.CKA_TOKEN, False)]
        if cls in _KEEP_SECRET:
            out = [(t, v) for t, v in out if t != C.CKA_EXTRACTABLE] + [(C.CKA_EXTRACTABLE, True)]
        # CKA_EXPORTABLE FALSE is kept by the layer, in the record (see _store)
        return [(t, v) for t, v in out if t != C.CKA_EXPORTABLE or v]

    @staticmethod
    def _unexportable(template):
        return any(t == C.CKA_EXPORTABLE and not v for t, v in template)

    def _external(self, session, make, specs, source="unwrap", exportable=True):
        """Make objects, storing those marked external. specs: [(template, class or None, external)];
        make(session, templates) -> HSM handles. All external: made in a session of our own, closed
        after (so nothing is left behind); else in the caller's, the external ones destroyed after."""
        with self._lock:
            self._check_rw(session)
            with _own_work("the external token's files"):
                self._setup()
            templates = [self._as_session_template(t, cls) if ext else list(t) for t, cls, ext in specs]
            every = all(ext for *_, ext in specs)
            target = self.lower.open_session(SLOT, RW) if every else session
            stored = []
            try:
                handles = list(make(target, templates))
                out = []
                for handle, (spec_template, _, ext) in zip(handles, specs):
                    if ext:
                        stored.append(self._store(handle, source=source, exportable=exportable and not
                                                  self._unexportable(spec_template)))
                        out.append(stored[-1])
                    else:
                        out.append(handle)
                if not every:
                    for handle, (*_, ext) in zip(handles, specs):
                        if ext:
                            self.lower.destroy_object(session, handle)
                return out
            except BaseException:
                for handle in stored:
                    try:
                        self._token.files.delete(handle - BASE)
                    except CKRError:
                        pass
                raise
            finally:
                if every:
                    self.lower.close_session(target)

    def _store(self, handle, oid=None, source="unwrap", exportable=True):
        """Wrap an HSM object under its master key and append it -> virtual handle.

        CKA_EXPORTABLE FALSE (PTK-C: the key cannot be wrapped out of the token) is kept in the
        record's index attributes, not in the HSM's copy: that one must stay wrappable by the master
        key (for C_SetAttributeValue's rewrite), and only the layer can name it (_hidden); the
        layer refuses C_WrapKey of the object and gives its copies CKA_EXPORTABLE FALSE."""
        token = self._token
        types = FAST + (C.CKA_EXTRACTABLE, C.CKA_TRUSTED, C.CKA_UNIQUE_ID, C.CKA_EXPORTABLE)
        values = dict(zip(types, self.lower.get_attributes(self._loader, handle, list(types))))
        meta = {t: values[t] for t in FAST if not isinstance(values[t], CKRError)}
        # The object keeps the identity it was made with: each load and rewrite makes a new
        # copy in the HSM, with a CKA_UNIQUE_ID of its own, which the application never sees.
        earlier = token.files.index.get(oid) if oid is not None else None
        meta[C.CKA_UNIQUE_ID] = (earlier.meta if earlier else {}).get(C.CKA_UNIQUE_ID, values[C.CKA_UNIQUE_ID])
        if meta.get(C.CKA_CLASS) in _KEEP_SECRET and values[C.CKA_EXTRACTABLE] is not True:
            raise CKRError(UNEXTRACTABLE_RV[source], UNEXTRACTABLE)
        if values[C.CKA_TRUSTED] is True:
            raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, "external objects cannot be trusted")
        if values[C.CKA_EXPORTABLE] is False:    # an unexportable key of the HSM brought in
            raise CKRError(UNEXTRACTABLE_RV[source], "ExtToken wraps its objects: a key with CKA_EXPORTABLE "
                                                     "FALSE in the HSM cannot be stored on slot 0")
        if not exportable or (earlier is not None and earlier.meta.get(C.CKA_EXPORTABLE) is False):
            if meta.get(C.CKA_CLASS) not in _KEEP_SECRET:
                raise CKRError(C.CKR_ATTRIBUTE_TYPE_INVALID, "CKA_EXPORTABLE is an attribute of keys")
            meta[C.CKA_EXPORTABLE] = False
        kind = PRIVATE if meta.get(C.CKA_PRIVATE) else PUBLIC
        master = self._master(kind)
        cryptogram = self.lower.wrap_key(self._loader, token.mechanisms[kind], master, handle)
        return BASE + token.files.put(oid, kind, meta, cryptogram)

    def create_object(self, session, template):
        wanted = dict(template)
        if not self._ext(session) or wanted.get(C.CKA_TOKEN) is not True:
            return self.lower.create_object(session, template)
        return self._external(session, lambda s, ts: [self.lower.create_object(s, ts[0])],
                              [(template, wanted.get(C.CKA_CLASS), True)])[0]

    def generate_key(self, session, mechanism, template):
        wanted = dict(template)
        if not self._ext(session) or wanted.get(C.CKA_TOKEN) is not True:
            return self.lower.generate_key(session, mechanism, template)
        cls = C.CKO_DOMAIN_PARAMETERS if mechanism.type in _PARAMETER_GEN else C.CKO_SECRET_KEY
        return self._external(session, lambda s, ts: [self.lower.generate_key(s, mechanism, ts[0])],
                              [(template, cls, True)])[0]

    def generate_key_pair(self, session, mechanism, public_template, private_template):
        external = [dict(t).get(C.CKA_TOKEN) is True for t in (public_template, private_template)]
        if not self._ext(session) or not any(external):
            return self.lower.generate_key_pair(session, mechanism, public_template, private_template)
        return tuple(self._external(
            session, lambda s, ts: self.lower.generate_key_pair(s, mechanism, ts[0], ts[1]),
            [(public_template, C.CKO_PUBLIC_KEY, external[0]),
             (private_template, C.CKO_PRIVATE_KEY, external[1])]))

    def copy_object(self, session, obj_handle, template):
        if not self._ext(session):
            return self.lower.copy_object(session, obj_handle, template)
        with self._lock:
            source = [(obj_handle, C.CKR_OBJECT_HANDLE_INVALID)]
            from_token = obj_handle >= BASE or self.lower.get_attributes(
                session, self._resolve(session, obj_handle), [C.CKA_TOKEN])[0] is True
            exportable = obj_handle < BASE or self._entry(obj_handle).meta.get(C.CKA_EXPORTABLE) is not False
            if dict(template).get(C.CKA_TOKEN, from_token) is not True:
                if not exportable:     # the copy of an unexportable key is one too
                    template = [(t, v) for t, v in template if t != C.CKA_EXPORTABLE] + [(C.CKA_EXPORTABLE, False)]
                return self._with_loaded(session, lambda h: self.lower.copy_object(session, h, template), source)
            return self._external(session, lambda s, ts: [self._with_loaded(
                session, lambda h: self.lower.copy_object(s, h, ts[0]), source)], [(template, None, True)], "copy",
                exportable)[0]

    def derive_key(self, session, mechanism, base_handle, template):
        if not self._ext(session):
            return self.lower.derive_key(session, mechanism, base_handle, template)
        with self._lock:
            def derive(s, ts):
                return [self._with_loaded(session, lambda m, h: self.lower.derive_key(s, m, h, ts[0]),
                                          [(base_handle, C.CKR_KEY_HANDLE_INVALID)], mechanism)]
            if dict(template).get(C.CKA_TOKEN) is not True:
                return derive(session, [template])[0]
            return self._external(session, derive, [(template, C.CKO_SECRET_KEY, True)])[0]

    def unwrap_key(self, session, mechanism, unwrapping_handle, wrapped, template):
        if not self._ext(session):
            return self.lower.unwrap_key(session, mechanism, unwrapping_handle, wrapped, template)
        with self._lock:
            def unwrap(s, ts):
                return [self._with_loaded(session, lambda k: self.lower.unwrap_key(s, mechanism, k, wrapped, ts[0]),
                                          [(unwrapping_handle, C.CKR_UNWRAPPING_KEY_HANDLE_INVALID)])]
            token = dict(template).get(C.CKA_TOKEN)
            if token is True:
                return self._external(session, unwrap, [(template, dict(template).get(C.CKA_CLASS), True)])[0]
            handle = unwrap(session, [template])[0]
            if token is None and mechanism.type in _RESTORING and \
                    self.lower.get_attributes(session, handle, [C.CKA_TOKEN])[0] is True:
                # A whole object restored as the token object it was: it belongs outside.
                try:
                    return self._store(handle)
                finally:
                    self.lower.destroy_object(session, handle)
            return handle

    # -- changing, destroying, reading -----------------------------------------------
    def destroy_object(self, session, obj_handle):
        if obj_handle < BASE or not self._ext(session):
            return self.lower.destroy_object(session, self._resolve(session, obj_handle))
        with self._lock:
            entry = self._entry(obj_handle)
            self._check_rw(session)
            self._token.files.delete(entry.oid)
            if entry.oid in self._cache:
                self._unload(entry.oid)

    def set_attributes(self, session, obj_handle, template):
        if obj_handle < BASE or not self._ext(session):
            return self.lower.set_attributes(session, self._resolve(session, obj_handle), template)
        _refuse(template)
        if any(t == C.CKA_EXTRACTABLE and not v for t, v in template):
            raise CKRError(C.CKR_ATTRIBUTE_VALUE_INVALID, f"CKA_EXTRACTABLE=FALSE on slot 0: {UNEXTRACTABLE}")
        changes = []
        for attr_type, value in template:
            if attr_type == C.CKA_TOKEN:
                if value is not True:
                    raise CKRError(C.CKR_ATTRIBUTE_READ_ONLY, "CKA_TOKEN cannot be changed")
                continue
            changes.append((attr_type, value))
        exportable = not self._unexportable(changes)
        changes = [(t, v) for t, v in changes if t != C.CKA_EXPORTABLE or v]    # FALSE: kept by _store
        with self._lock:
            entry = self._entry(obj_handle)
            self._check_rw(session)
            if entry.meta.get(C.CKA_EXPORTABLE) is False and any(t == C.CKA_EXPORTABLE for t, _ in changes):
                raise CKRError(C.CKR_ATTRIBUTE_READ_ONLY, "CKA_EXPORTABLE can only become FALSE")
            try:
                handle = self._with_loaded(session, lambda h: self.lower.set_attributes(session, h, changes) or h,
                                           [(obj_handle, C.CKR_OBJECT_HANDLE_INVALID)])
                self._store(handle, entry.oid, exportable=exportable)
                self._cache[entry.oid] = (self._token.files.index[entry.oid].offset, handle)
            except BaseException:
                self._unload(entry.oid)     # the loaded copy may be ahead of the file
                raise

    def get_attributes(self, session, obj_handle, types):
        if session not in self._sessions:
            return self.lower.get_attributes(session, obj_handle, types)
        if obj_handle < BASE:
            return self.lower.get_attributes(session, self._resolve(session, obj_handle), types)
        with self._lock:
            entry = self._entry(obj_handle)
            if all(t == C.CKA_TOKEN or t in entry.meta for t in types):
                return [True if t == C.CKA_TOKEN else entry.meta[t] for t in types]
            out = self._with_loaded(session, lambda h: self.lower.get_attributes(session, h, types),
                                    [(obj_handle, C.CKR_OBJECT_HANDLE_INVALID)])
        own = {C.CKA_TOKEN: True, C.CKA_UNIQUE_ID: entry.meta.get(C.CKA_UNIQUE_ID)}
        out = [own[t] if t in own and own[t] is not None and not isinstance(v, CKRError) else v
               for t, v in zip(types, out)]
        if entry.meta.get(C.CKA_EXPORTABLE) is False:    # the record's, not the loaded copy's
            out = [False if t == C.CKA_EXPORTABLE else v for t, v in zip(types, out)]
        return out

    def object_size(self, session, obj_handle):
        with self._lock:
            return self._with_loaded(session, lambda h: self.lower.object_size(session, h),
                                     [(obj_handle, C.CKR_OBJECT_HANDLE_INVALID)])

    # -- finding ---------------------------------------------------------------------
    def find_init(self, session, template):
        if not self._ext(session):
            return self.lower.find_init(session, template)
        with self._lock:
            if session in self._finds:
                raise CKRError(C.CKR_OPERATION_ACTIVE, "a find is active")
            self._finds[session] = iter(self._found(session, template))

    def _found(self, session, template):
        template = list(template)   # read twice below: once for the lower find, once per entry
        with _own_work("the external token's files"):
            files = self._setup().files
            files.refresh()
        internal = self._internal()
        found = [h for h in self._find_lower(session, template) if h not in internal]
        wanted = dict(template)
        if wanted.get(C.CKA_TOKEN, True) is True:
            # Public objects first, then private ones, each in creation order: the HSM's order.
            entries = sorted((files.index[oid] for oid in files.candidates(wanted)),
                             key=lambda e: (e.kind, e.oid))
            for entry in entries:
                if (entry.kind == PUBLIC or self._user) and self._matches(session, entry, template):
                    found.append(BASE + entry.oid)
        return found

    def _internal(self):
        """The HSM's own objects of the external token, hidden from applications' finds (ctkmu
        lists them): an application cannot mistake them for its own or destroy them by a sweep."""
        token = self._token
        if token is None:
            return ()
        return {token.data_object, *token.masters.values()}

    def _matches(self, session, entry, template):
        slow = []
        for attr_type, value in template:
            if attr_type == C.CKA_TOKEN:
                if value is not True:
                    return False
            elif attr_type in FAST or attr_type in entry.meta:
                if entry.meta.get(attr_type, _MISSING) != value:
                    return False
            else:
                slow.append((attr_type, value))
        if not slow:
            return True
        try:
            values = self._with_loaded(session, lambda h: self.lower.get_attributes(
                self._loader, h, [t for t, _ in slow]), [(BASE + entry.oid, C.CKR_OBJECT_HANDLE_INVALID)])
        except CKRError as exc:
            logger.warning("ExtToken: find skips object %d: %s", entry.oid, exc)
            return False
        return all(not isinstance(v, CKRError) and v == want for v, (_, want) in zip(values, slow))

    def find(self, session, max_count):
        found = self._finds.get(session)
        if found is None:
            return self.lower.find(session, max_count)
        return list(itertools.islice(found, max_count))

    def find_final(self, session):
        if self._finds.pop(session, None) is None:
            return self.lower.find_final(session)

    def find_all(self, session, template):
        if not self._ext(session):
            return self.lower.find_all(session, template)
        with self._lock:
            return self._found(session, template)

    def cancel(self, session, flags):
        self.lower.cancel(session, flags)
        if flags & C.CKF_FIND_OBJECTS:
            self._finds.pop(session, None)

    # -- operations with keys ----------------------------------------------------------
    def digest_key(self, session, key):
        with self._lock:
            try:
                return self._with_loaded(session, lambda k: self.lower.digest_key(session, k),
                                         [(key, C.CKR_KEY_HANDLE_INVALID)], probe=True)
            except CKRError:
                # a failed step ends the digest, as it does in the HSM (PKCS#11 §5.2)
                self.lower.cancel(session, C.CKF_DIGEST)
                raise

    def wrap_key(self, session, mechanism, wrapping_handle, key_handle):
        with self._lock:
            if key_handle >= BASE and self._ext(session) and \
                    self._entry(key_handle, C.CKR_KEY_HANDLE_INVALID).meta.get(C.CKA_EXPORTABLE) is False:
                raise CKRError(C.CKR_KEY_UNEXTRACTABLE, "the key's CKA_EXPORTABLE is FALSE: it cannot be wrapped")
            return self._with_loaded(session, lambda m, w, k: self.lower.wrap_key(session, m, w, k),
                                     [(wrapping_handle, C.CKR_WRAPPING_KEY_HANDLE_INVALID),
                                      (key_handle, C.CKR_KEY_HANDLE_INVALID)], mechanism)


def _keyed_init(name):
    def init(self, session, mechanism, key):
        lower_init = getattr(self.lower, name)
        if session not in self._sessions:
            return lower_init(session, mechanism, key)
        if mechanism.type in P.KEY_HANDLE_MECHANISMS:
            with self._lock:
                return self._with_loaded(session, lambda m, k: lower_init(session, m, k),
                                         [(key, C.CKR_KEY_HANDLE_INVALID)], mechanism)
        if key < BASE:
            # names no external object: nothing to load, so no lock (as get_attributes)
            return lower_init(session, mechanism, self._resolve(session, key, C.CKR_KEY_HANDLE_INVALID))
        with self._lock:    # the parameter names no key: _with_loaded need not look at it
            return self._with_loaded(session, lambda k: lower_init(session, mechanism, k),
                                     [(key, C.CKR_KEY_HANDLE_INVALID)])
    init.__name__ = name
    return init


for _name in ("encrypt_init", "decrypt_init", "sign_init", "verify_init"):
    setattr(ExtToken, _name, _keyed_init(_name))
