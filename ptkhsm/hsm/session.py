"""Sessions and the life cycle of their operations.

An operation ends when its result has been delivered or when it fails; a
length query (the caller's buffer is absent or too small) keeps it alive and
keeps the computed result, so the follow-up call returns the same bytes
without computing twice.

Single-part (C_Sign, C_Encrypt...) and multi-part (..Update, ..Final) calls do
not mix within one operation (PKCS#11 3.0 §5.2): C_SignFinal after a C_Sign
length query (pkcs11-tool --test-ec does this) would otherwise finish a
primitive that C_Sign already finished, or sign nothing. It ends the operation
with CKR_OPERATION_NOT_INITIALIZED: no multi-part operation is active.
"""

import _thread
import contextlib

from .. import constants as C
from .. import gate
from ..errors import CKRError

ENCRYPT, DECRYPT, DIGEST, SIGN, VERIFY, FIND = "encrypt", "decrypt", "digest", "sign", "verify", "find"


SINGLE, MULTI = "single-part", "multi-part"
# The steps of an operation: the methods of the operation objects the mechanisms make.
ONESHOT, UPDATE, FINAL = "oneshot", "update", "final"
_MODE = {ONESHOT: SINGLE, UPDATE: MULTI, FINAL: MULTI}  # a final step ends a multi-part operation


# Private-key operations of these families take a millisecond or more outside the
# GIL: they open the call gate (ptkhsm.gate) so other threads run meanwhile. ECDSA's
# 20 µs are worth it only while no other thread waits at the gate (gate.share_cores:
# shim/share.h has the measurements). EdDSA keeps it shut: opening it made find-then-sign
# on threads slower (docs/performance-profile.md).
_LONG_KEY_TYPES = frozenset((C.CKK_RSA, C.CKK_DSA, C.CKK_DH))
_BRIEF_KEY_TYPES = frozenset((C.CKK_EC,))
LONG, BRIEF = "long", "brief"   # a key's private-key operations, outside the GIL
# So does work on this much data.
_LONG_DATA = 1 << 16


class Active:
    __slots__ = ("op", "pending", "key", "needs_context_login", "mode", "aside")

    def __init__(self, op, key=None):
        self.op = op
        self.mode = None  # SINGLE or MULTI once the first call after init says which
        self.pending = None  # (step, input, output) held back by a length query
        self.key = key
        self.needs_context_login, self.aside = _NO_KEY if key is None else _traits(key)


_NO_KEY = (False, None)
_TRAITS = ("operation traits",)   # its name in a key's cache


def _traits(key):
    """(whether the key needs a CKU_CONTEXT_SPECIFIC login, LONG, BRIEF or None: how long its
    operations spend outside the GIL): asked once per key, kept in its cache (which goes when
    its attributes change)."""
    traits = key.cache.get(_TRAITS)
    if traits is None:
        attrs = key.attrs
        aside = None
        if attrs.get(C.CKA_CLASS) == C.CKO_PRIVATE_KEY:
            kind = attrs.get(C.CKA_KEY_TYPE)
            aside = LONG if kind in _LONG_KEY_TYPES else BRIEF if kind in _BRIEF_KEY_TYPES else None
        traits = key.cache[_TRAITS] = (bool(attrs.get(C.CKA_ALWAYS_AUTHENTICATE)), aside)
    return traits


class Session:
    """A session. `lock` serialises the steps of its operations: an application may
    call one session from several threads at once (tests/fuzz found C_Digest and
    C_DigestUpdate racing on one hash context), and no crypto context is thread-safe."""

    __slots__ = ("handle", "slot_id", "rw", "ops", "objects", "lock")

    def __init__(self, handle, slot_id, rw):
        self.handle = handle
        self.slot_id = slot_id
        self.rw = rw
        self.ops = {}
        self.objects = set()  # handles of the session objects it owns
        # re-entered: a host's GC may finish an abandoned operation mid-call. _thread's, not
        # threading.RLock(), a Python-level factory called on every C_OpenSession
        self.lock = _thread.RLock()

    def idle(self, kind):
        """The one check of CKR_OPERATION_ACTIVE: an Init while an operation of `kind` runs
        (made before an Init looks at its mechanism and key, and again by begin)."""
        if kind in self.ops:
            raise CKRError(C.CKR_OPERATION_ACTIVE, f"a {kind} operation is active")

    def begin(self, kind, op, key=None):
        with self.lock:
            self.idle(kind)
            self.ops[kind] = Active(op, key)

    def active(self, kind, mode=None):
        """The operation of `kind`, about to take a `mode` call (None: a final step)."""
        state = self.ops.get(kind)
        if state is None:
            raise CKRError(C.CKR_OPERATION_NOT_INITIALIZED, f"no {kind} operation")
        if state.needs_context_login:
            self.ops.pop(kind)
            raise CKRError(C.CKR_USER_NOT_LOGGED_IN, "key needs CKU_CONTEXT_SPECIFIC login")
        if mode is not None and state.mode != mode:
            if state.mode is not None:
                self.ops.pop(kind, None)
                raise CKRError(C.CKR_OPERATION_NOT_INITIALIZED,
                               f"{mode} call in a {state.mode} {kind} operation")
            state.mode = mode
        return state

    def end(self, kind):
        self.ops.pop(kind, None)

    @contextlib.contextmanager
    def ends_on_failure(self, kind):
        """Checks a step makes before it runs (C_DigestKey's key): failing, they end the
        operation like any failed step of an active operation."""
        self.active(kind)
        try:
            yield
        except CKRError:
            self.ops.pop(kind, None)
            raise

    def produce(self, kind, step, data, out_len):
        """Run the operation's `step` (ONESHOT or UPDATE with `data`, FINAL without) for
        `kind`, honouring the length-query convention.

        out_len is the caller's buffer size (None: length query). The result is
        returned in every case; the ABI decides what to copy. ONESHOT and FINAL end
        the operation once their output is delivered.
        """
        with self.lock:
            state = self.active(kind, _MODE[step])
            if state.aside is LONG or (data is not None and len(data) >= _LONG_DATA):
                gate.let_others_in()
            elif state.aside is BRIEF:
                gate.share_cores()
            if state.pending is not None:
                result = self._repeated(kind, state, step, data)
            else:
                try:
                    result = state.op.final() if step is FINAL else getattr(state.op, step)(data)
                except BaseException:
                    self.ops.pop(kind, None)
                    raise
            if out_len is None or len(result) > out_len:
                state.pending = (step, data, result)
            elif step is not UPDATE:
                self.ops.pop(kind, None)
            else:
                state.pending = None
            return result

    def _repeated(self, kind, state, step, data):
        """After a length query only the same call may follow: the primitive has
        consumed its input (or finished) already. -> the result kept for it."""
        if state.pending[:2] != (step, data):
            self.ops.pop(kind, None)
            raise CKRError(C.CKR_ARGUMENTS_BAD, f"{kind}: after a length query, the same call with "
                           f"the same input must follow")
        return state.pending[2]

    def consume(self, kind, step, *args):
        """Run an operation step that has no output: an UPDATE, a single-part C_Verify
        (ONESHOT) or a FINAL step; all but updates end the operation."""
        with self.lock:
            state = self.active(kind, _MODE[step])
            if state.aside is LONG or (args and args[0] is not None and len(args[0]) >= _LONG_DATA):
                gate.let_others_in()
            if state.pending is not None:
                self._repeated(kind, state, step, None)
            try:
                result = getattr(state.op, step)(*args)
            except BaseException:
                self.ops.pop(kind, None)
                raise
            if step is not UPDATE:
                self.ops.pop(kind, None)
            return result
