"""A token: its PINs and login state, and the persistence of its token objects.

Token objects are kept in memory (`objects`, handle -> Obj) and written
through to the store. Public objects load when the token is first used;
private ones are unsealed at user login and dropped at logout, so their
plaintext never outlives the login.

Login state belongs to applications (`core.AppToken`); the token counts the
applications logged in, keeps its data key unsealed while any is, and its
private objects loaded while any user is.

Another HSM on the same store (a member of a group, another process) may
re-initialise the token: its row then carries a new `generation`. A refresh
that sees one calls `on_reinitialised(slot_id)`, whose owner ends the token's
sessions here; with them go the logins and the old data key.
"""

import os

from .. import constants as C
from .. import schema
from ..errors import CKRError
from .objects import Obj, ObjectTable
from .store import sealing

SO, USER = C.CKU_SO, C.CKU_USER


class PinPolicy:
    def __init__(self, min_len, max_len, max_failures, iterations):
        self.min_len, self.max_len = min_len, max_len
        self.max_failures, self.iterations = max_failures, iterations

    def check_length(self, pin):
        if not self.min_len <= len(pin) <= self.max_len:
            raise CKRError(C.CKR_PIN_LEN_RANGE,
                           f"PIN length {len(pin)} outside {self.min_len}..{self.max_len}")


class Token:
    def __init__(self, slot_id, store, pins, is_admin, admin_label=None):
        self.slot_id = slot_id
        self.store = store
        self.pins = pins
        self.is_admin = is_admin
        self.admin_label = admin_label
        self._logins = {SO: 0, USER: 0}  # applications logged in as each
        self.objects = ObjectTable()  # handle -> Obj, token objects currently loaded
        self._by_uid = {}        # uid -> Obj
        self._data_key = None    # unsealed while someone is logged in
        self._row = None
        self._seen_version = None
        self.on_reinitialised = None  # set by the HSM: slot_id -> None
        self.reload_row()
        self._generation = self._current_generation()

    # -- state ---------------------------------------------------------------
    def reload_row(self):
        self._row = self.store.token(self.slot_id)

    def _current_generation(self):
        """None: not initialised; b"": a row written before generations were stored."""
        return (self._row["generation"] or b"") if self._row else None

    @property
    def initialized(self):
        return self._row is not None

    @property
    def label(self):
        if self.is_admin:
            return self.admin_label
        return self._row["label"] if self._row else b""

    @property
    def user_pin_set(self):
        return bool(self._row and self._row["user_sealed"])

    def flags(self):
        flags = C.CKF_RNG | C.CKF_LOGIN_REQUIRED
        if self.is_admin:
            flags |= C.CKF_ADMIN_TOKEN
        if not self._row:
            return flags
        flags |= C.CKF_TOKEN_INITIALIZED
        if self.user_pin_set:
            flags |= C.CKF_USER_PIN_INITIALIZED
        flags |= self._counter_flags(self._row["user_failures"], C.CKF_USER_PIN_COUNT_LOW,
                                     C.CKF_USER_PIN_FINAL_TRY, C.CKF_USER_PIN_LOCKED)
        flags |= self._counter_flags(self._row["so_failures"], C.CKF_SO_PIN_COUNT_LOW,
                                     C.CKF_SO_PIN_FINAL_TRY, C.CKF_SO_PIN_LOCKED)
        return flags

    def _counter_flags(self, failures, low, final, locked):
        if failures >= self.pins.max_failures:
            return locked
        if failures == self.pins.max_failures - 1:
            return final | low
        return low if failures else 0

    # -- PINs ----------------------------------------------------------------
    def init_token(self, so_pin, label):
        self.pins.check_length(so_pin)
        if self._row:
            self._verify(SO, so_pin)
        data_key = sealing.new_data_key()
        salt, sealed = sealing.seal_under_pin(so_pin, data_key, self.pins.iterations)
        self.store.init_token(self.slot_id, {"label": label, "so_salt": salt, "so_sealed": sealed,
                                             "generation": os.urandom(16)})
        self.reload_row()
        self._generation = self._current_generation()  # ours: no session here to end (C_InitToken had none)
        self._forget_objects()

    def init_pin(self, pin):
        self.pins.check_length(pin)
        salt, sealed = sealing.seal_under_pin(pin, self._data_key, self.pins.iterations)
        self.store.update_token(self.slot_id, user_salt=salt, user_sealed=sealed, user_failures=0)
        self.reload_row()

    def set_pin(self, who, old_pin, new_pin):
        self.pins.check_length(new_pin)
        data_key = self._verify(who, old_pin)
        salt, sealed = sealing.seal_under_pin(new_pin, data_key, self.pins.iterations)
        prefix = "so" if who == SO else "user"
        self.store.update_token(self.slot_id, **{f"{prefix}_salt": salt, f"{prefix}_sealed": sealed})
        self.reload_row()

    def _verify(self, who, pin):
        """Check a PIN against the sealed data key; counts failures. -> data key."""
        self.reload_row()
        prefix = "so" if who == SO else "user"
        if not self._row or not self._row[f"{prefix}_sealed"]:
            raise CKRError(C.CKR_USER_PIN_NOT_INITIALIZED if who == USER else C.CKR_TOKEN_NOT_RECOGNIZED,
                           "PIN not initialised")
        # The attempt is counted in the store before the PIN is tried, and the count
        # reset on success: a store shared by several HSMs (or processes) then allows
        # exactly max_failures wrong PINs in all, however many guess in parallel.
        attempts = self.store.use_attempt(self.slot_id, prefix, self.pins.max_failures)
        if attempts is None:
            self.reload_row()
            raise CKRError(C.CKR_PIN_LOCKED, "PIN locked after too many failures")
        try:
            data_key = sealing.unseal_with_pin(pin, self._row[f"{prefix}_salt"],
                                               self._row[f"{prefix}_sealed"], self.pins.iterations)
        except sealing.WrongKey:
            self.reload_row()
            locked = attempts >= self.pins.max_failures
            raise CKRError(C.CKR_PIN_LOCKED if locked else C.CKR_PIN_INCORRECT, "wrong PIN") from None
        self.store.update_token(self.slot_id, **{f"{prefix}_failures": 0})
        self.reload_row()
        return data_key

    def log_in(self, who, pin):
        """One more application logged in as `who` (each gives the PIN)."""
        if who == USER and not self.user_pin_set:
            raise CKRError(C.CKR_USER_PIN_NOT_INITIALIZED, "user PIN not initialised")
        self._data_key = self._verify(who, pin)
        self._logins[who] += 1
        if who == USER and self._logins[USER] == 1:
            self._load(private=True)

    def check_pin(self, pin):
        """CKU_CONTEXT_SPECIFIC: the user's PIN again, without changing the login."""
        self._verify(USER, pin)

    def log_out(self, who):
        """One application logged in as `who` logs out; the last one takes the key along."""
        self._logins[who] -= 1
        if not self._logins[USER]:
            for obj in [o for o in self.objects.values() if o.is_private]:
                self._drop(obj)
        if not any(self._logins.values()):
            self._data_key = None

    # -- objects -------------------------------------------------------------
    def stale(self):
        """Whether another HSM's change has been notified since the objects were loaded.
        Asked by calls that otherwise never look at the store (C_OpenSession, operation
        inits, new session objects), so only of a store whose version() costs no query
        (PostgreSQL's notifications); False for sqlite, whose processes see a change at
        their next find, login, token object creation or C_GetTokenInfo. False before the
        first load, too."""
        return (self.store.notifies and self._seen_version is not None
                and self.store.version() != self._seen_version)

    def ensure_loaded(self):
        """Load (or refresh, after another process changed the store) the token objects."""
        version = self.store.version()
        if version != self._seen_version:
            self._seen_version = version
            self.reload_row()
            self._check_generation()
            self._load(private=False)
            if self._logins[USER]:
                self._load(private=True)

    def _check_generation(self):
        """A token initialised elsewhere since we last looked (or removed from the store)
        is another token: end what this HSM holds of the old one."""
        generation = self._current_generation()
        if generation == self._generation:
            return
        old, self._generation = self._generation, generation
        if old is None:
            return  # a first initialisation: nothing of an older token to end
        if self.on_reinitialised is not None:
            self.on_reinitialised(self.slot_id)  # ends the sessions, hence the logins
        self._logins = {SO: 0, USER: 0}
        self._data_key = None
        self._forget_objects()

    def _load(self, private):
        rows = self.store.objects(self.slot_id, private)
        present = set()
        for uid, blob in rows:
            present.add(uid)
            attrs = self._decode(blob, private, uid)
            obj = self._by_uid.get(uid)
            if obj is None:
                self._add(self._new_obj(attrs, uid))
            elif obj.attrs != attrs:
                obj.replace_attrs(attrs)
        for obj in [o for o in self._by_uid.values() if o.is_private == private and o.uid not in present]:
            self._drop(obj)

    def _new_obj(self, attrs, uid):
        # A token object's handle is its store row (never reused: AUTOINCREMENT), so it
        # is the same across logout/login, reloads and every server of one store (HA).
        return Obj(uid, attrs, self.slot_id, uid=uid)

    def _add(self, obj):
        self.objects[obj.handle] = obj
        self._by_uid[obj.uid] = obj

    def _drop(self, obj):
        self.objects.pop(obj.handle, None)
        self._by_uid.pop(obj.uid, None)

    def _forget_objects(self):
        self.objects.clear()
        self._by_uid.clear()

    def _encode(self, attrs):
        plain = schema.encode_template(tuple(attrs.items()))
        if attrs.get(C.CKA_PRIVATE):
            if self._data_key is None:
                raise CKRError(C.CKR_USER_NOT_LOGGED_IN, "private object without login")
            return sealing.seal(self._data_key, plain, b"ptkhsm-object")
        return sealing.seal_public(self.store.storage_key, plain)

    def _decode(self, blob, private, uid):
        try:
            if private:
                blob = sealing.unseal(self._data_key, blob, b"ptkhsm-object")
            else:
                blob = sealing.unseal_public(self.store.storage_key, blob)
        except sealing.WrongKey:
            raise CKRError(C.CKR_DEVICE_ERROR, f"stored object {uid} fails its integrity check") from None
        try:
            return dict(schema.decode_template(blob))
        except ValueError:
            raise CKRError(C.CKR_DEVICE_ERROR, f"stored object {uid} is malformed") from None

    def store_new(self, attrs_list):
        """Persist new token objects in one transaction -> their Obj."""
        uids = self.store.insert(self.slot_id, [(a.get(C.CKA_PRIVATE, False), self._encode(a))
                                                for a in attrs_list])
        objs = [self._new_obj(attrs, uid) for attrs, uid in zip(attrs_list, uids)]
        for obj in objs:
            self._add(obj)
        return objs

    def store_update(self, obj, attrs):
        self.store.update(obj.uid, attrs.get(C.CKA_PRIVATE, False), self._encode(attrs))
        obj.replace_attrs(attrs)

    def store_delete(self, obj):
        self.store.delete(obj.uid)
        self._drop(obj)
